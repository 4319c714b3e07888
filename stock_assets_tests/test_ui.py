"""The Dagster UI in a real browser, as a user uses it: one journey on one `dagster dev`.

`dagster dev` (webserver + daemon: the project's instance config queues runs,
so the daemon must dequeue them) runs on a test instance in a temp
DAGSTER_HOME, against the FMP simulator (a small universe), on a free loopback
port. Headless Chromium (Debian's package, driven by Playwright) then:
  1. sees the catalog list all six assets;
  2. clicks Materialize on `symbols`: the run page shows it succeed, and it
     really ran (the simulator saw `company-screener`, market.symbols holds
     the universe);
  3. sees the `sync_after_universe` sensor (on by default) follow that run
     with the rest of the daily sync, run by the daemon;
  4. sees no Missing trading day in `daily_prices`: the history load holds them;
  5. with one symbol's profile due and its calls failing, materializes all
     shards of `company_profiles` (Materialize… → All → Launch backfill);
  6. reads why the failed partition failed (the symbol, FMP's answer, the
     next action); a shard that succeeded shows the row count it holds;
  7. sees `item_success_rate` failed on that partition, with its figures;
  8. with the fault gone, Materialize… → Failed runs that partition alone.
Screenshots land in `test-artifacts/` (ui-*.png), with the dagster dev log.
"""

from __future__ import annotations

import re
import shutil
import time

import dagster as dg
import pytest
from playwright.sync_api import expect

from stock_assets.defs.assets.common import FMP_POOL
from stock_assets.runs.instance_health import pool_limit
from stock_assets.runs.plan import shards_of_run
from stock_assets.tags import SYNC_TAG
from stock_assets_tests.conftest import make_platform
from stock_assets_tests.ui_support import (ARTIFACTS, chromium_path, dagster_dev, launch_chromium, runs_progress,
                                           wait_while_moving)

ASSETS = ["symbols", "splits", "daily_prices", "price_history", "dividends", "dividend_history",
          "company_profiles"]
TIMEOUT_MS = 60_000  # a 2-core machine running other tests beside this one
RUN_TIMEOUT_MS = 180_000  # dequeue by the daemon, a new process that loads the code, the step


@pytest.fixture()
def platform(tmp_path, monkeypatch):
    """Ten symbols in eight shards (one holds two, for step 5): every run under the daemon is a new
    process that loads the code, so the daemon's sync is kept to a dozen runs."""
    platform = make_platform(tmp_path, monkeypatch, symbols=10)
    yield platform
    platform.sim.stop()


@pytest.mark.timeout(1200)
@pytest.mark.slow
@pytest.mark.scenario  # a sync and 40 backfill runs under `dagster dev`: 5-8 minutes alone, run by CI after the default run
def test_a_user_journey_through_the_dagster_ui(platform, tmp_path):
    if chromium_path() is None:
        pytest.fail("Chromium is missing: `apt-get install chromium` (.ci/run does it)")
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("ui-*"):
        old.unlink()
    try:
        with dagster_dev(tmp_path) as ui, launch_chromium() as browser:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            context.set_default_timeout(TIMEOUT_MS)
            # Playwright's `expect` keeps its own 5 s default, which the context's does not change:
            # a loaded CI machine took longer than that to show an asset page's status.
            expect.set_options(timeout=TIMEOUT_MS)
            page = context.new_page()
            # The first visit may open a "Join the Dagster community" dialog over the page.
            page.add_locator_handler(page.get_by_role("button", name="Skip", exact=True),
                                     lambda skip: skip.click())
            try:
                _catalog_and_a_daily_sync(page, ui.url, platform)
                _a_failed_partition(page, ui.url, platform)
            except BaseException:
                page.screenshot(path=str(ARTIFACTS / "ui-failure.png"), full_page=True)
                raise
            finally:
                context.close()
    finally:
        log = tmp_path / "dagster-dev.log"
        if log.exists():
            shutil.copy(log, ARTIFACTS / "ui-dagster-dev.log")


def _catalog_and_a_daily_sync(page, url: str, platform) -> None:
    # 1. The catalog lists the six assets (and the code location loaded: no error banner).
    page.goto(f"{url}/assets")
    for name in ASSETS:
        # Each row links to the asset's page (its link text repeats the name).
        link = page.get_by_role("link", name=re.compile(rf"^{name}( {name})?$")).and_(
            page.locator(f'a[href$="/assets/{name}"]'))
        expect(link.first).to_be_visible()
    expect(page.get_by_text(re.compile("error loading|failed to load", re.I))).to_have_count(0)
    expect(page.get_by_text("Never materialized").first).to_be_visible()  # statuses loaded
    page.screenshot(path=str(ARTIFACTS / "ui-catalog.png"))

    # 2. Materialize `symbols` from its page; the run page shows it succeed.
    platform.sim.clear_requests()
    page.goto(f"{url}/assets/symbols")
    expect(page.get_by_text("Never materialized").first).to_be_visible()
    for downstream in ASSETS[1:]:  # its lineage: every other asset depends on it
        expect(page.locator(f'a[href*="/assets/{downstream}"]').first).to_be_visible()
    before = {r.run_id for r in platform.instance().get_runs()}
    page.get_by_role("button").filter(has_text=re.compile(r"^Materialize$")).click()
    # The run the click launched, from the instance: the "Launched run" toast lasts seconds, and the
    # community dialog of a first visit can cover it (its Skip is clicked when it shows).
    run_id = _new_run(platform, before)
    page.goto(f"{url}/runs/{run_id}")
    outcome = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
    expect(outcome).to_be_visible(timeout=RUN_TIMEOUT_MS)
    assert outcome.inner_text() == "Success", f"run {run_id} ended {outcome.inner_text()}"
    expect(page.get_by_text("RUN_SUCCESS").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "ui-symbols-run.png"))

    # ... and it really ran: the instance, the simulator and the warehouse agree.
    run = platform.instance().get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
    assert dg.AssetKey("symbols") in (run.asset_selection or set())
    paths = [r["path"] for r in platform.sim.requests()]
    assert "company-screener" in paths, paths
    truth = {r["symbol"] for r in platform.sim.truth.universe()
             if r["isActivelyTrading"] and not r["isFund"]}
    stored = {s for (s,) in platform.sql("SELECT symbol FROM market.symbols")}
    assert stored == truth and stored

    # 3. The sensor follows the universe run with the rest of the sync; the daemon runs it.
    sync_id = f"ui-{run_id[:8]}"
    # The sensor follows the universe run with the day's splits, then the splits run with the rest:
    # each step waits for a sensor tick, so the runs are "settled" only after a longer quiet.
    runs = _wait_for_runs(platform, lambda: platform.instance().get_runs(dg.RunsFilter(tags={SYNC_TAG: sync_id})),
                          quiet_s=45)
    assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.run_id, r.status) for r in runs]
    present = {s for (s,) in platform.sql("SELECT DISTINCT shard FROM market.symbols")}
    assert {shard for r in runs for shard in shards_of_run(r.tags)} >= present  # in a few runs of shard ranges
    # (a few more if the splits run finds stored history to restate: those shards' runs, as few)
    assert len([r for r in runs if shards_of_run(r.tags)]) <= 2 * pool_limit(platform.instance(), FMP_POOL)
    page.goto(f"{url}/runs")
    expect(page.get_by_text(sync_id).first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "ui-sync-runs.png"))

    # 4. No trading day the warehouse holds shows Missing (the housekeeping sensor reports them).
    page.goto(f"{url}/assets/daily_prices?view=partitions")
    expect(page.get_by_text(re.compile(r"^Missing \(0\)$"))).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(page.get_by_text(re.compile(r"^Failed \(0\)$"))).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "ui-daily-prices-partitions.png"))


def _shard_with_a_broken_symbol(platform) -> tuple[str, str]:
    """A shard of two symbols or more; its first symbol's profile is made due, and its calls fail."""
    shards = platform.sql("SELECT shard, min(symbol) FROM market.symbols GROUP BY shard HAVING count(*) > 1 "
                          "ORDER BY shard")
    shard, broken = shards[0]
    with platform.writer() as conn:
        conn.execute("DELETE FROM market.company_profiles WHERE symbol = ?", [broken])
    platform.sim.faults.failing_symbols = frozenset({broken})
    return shard, broken


def _a_failed_partition(page, url: str, platform) -> None:
    shard, broken = _shard_with_a_broken_symbol(platform)
    # 5. Every shard of company_profiles, from the UI.
    before = {b.backfill_id for b in platform.instance().get_backfills()}
    _launch_from_dialog(page, url, "All", expect)
    backfill = _wait_for_backfill(platform, before)
    statuses = {r.tags.get("dagster/partition"): r.status for r in _runs_of(platform, backfill)}
    assert statuses[shard] == dg.DagsterRunStatus.FAILURE
    assert [p for p, s in statuses.items() if s != dg.DagsterRunStatus.SUCCESS] == [shard]

    # 6. The failed partition says why, and what to do.
    _open_partition(page, url, shard, expect)
    expect(page.get_by_text(re.compile(r"^Failed \(1\)$"))).to_be_visible()
    for text in ("failed_symbols", "fmp_answers", "next_action"):
        expect(page.get_by_text(text, exact=True).first).to_be_visible()
    expect(page.get_by_text(broken, exact=True).first).to_be_visible()
    expect(page.get_by_text(re.compile(rf"^{broken}: .*500")).first).to_be_visible()
    expect(page.get_by_text(re.compile(r"Materialize… → Failed")).first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "ui-failed-partition.png"), full_page=True)

    # ... and a shard that succeeded shows the rows its partition holds.
    other, held = platform.sql("SELECT s.shard, count(*) FROM market.company_profiles p JOIN market.symbols s "
                               "USING (symbol) WHERE s.shard <> ? GROUP BY 1 ORDER BY 2 DESC LIMIT 1", [shard])[0]
    _open_partition(page, url, other, expect)
    row = page.locator("tr").filter(has=page.get_by_text("dagster/row_count", exact=True)).first
    expect(row.locator("td").nth(1)).to_have_text(str(held))
    page.screenshot(path=str(ARTIFACTS / "ui-row-count.png"))

    # 7. item_success_rate failed on that partition, with its figures.
    page.goto(f"{url}/assets/company_profiles?view=checks&checkDetail=item_success_rate")
    expect(page.get_by_text("Execution history", exact=True)).to_be_visible()  # the check's own tabs
    page.get_by_text("Partitions", exact=True).last.click()
    expect(page.get_by_text("Select a partition to view details")).to_be_visible()
    page.get_by_text(shard, exact=True).filter(visible=True).last.click()
    expect(page.get_by_text("Failed", exact=True).filter(visible=True).first).to_be_visible()
    for text in ("items_failed", "items_attempted", "success_rate"):
        expect(page.get_by_text(text, exact=True).filter(visible=True).first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "ui-check-failed.png"))

    # 8. The fault gone, Materialize… → Failed runs that partition alone.
    platform.sim.faults.failing_symbols = frozenset()
    before = {b.backfill_id for b in platform.instance().get_backfills()}
    runs_before = {r.run_id for r in platform.instance().get_runs()}
    _launch_from_dialog(page, url, "Failed", expect, launch=re.compile(r"^Launch (1 run|backfill)$"))
    new = _wait_for_runs(platform, lambda: [r for r in platform.instance().get_runs() if r.run_id not in runs_before])
    assert [(r.tags.get("dagster/partition"), r.status) for r in new] == [(shard, dg.DagsterRunStatus.SUCCESS)]
    page.goto(f"{url}/assets/company_profiles?view=partitions")
    expect(page.get_by_text(re.compile(r"^Failed \(0\)$"))).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "ui-after-failed-rerun.png"))
    (profiled,), = platform.sql("SELECT count(*) FROM market.company_profiles WHERE symbol = ?", [broken])
    assert profiled == 1


def _launch_from_dialog(page, url: str, choice: str, expect, launch=re.compile(r"^Launch backfill$")) -> None:
    """Materialize… on company_profiles' partitions, pick the partitions, launch."""
    page.goto(f"{url}/assets/company_profiles?view=partitions")
    page.get_by_role("button").filter(has_text=re.compile(r"^Materialize…$")).first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name=choice, exact=True).click()
    if choice == "Failed":
        expect(dialog.get_by_text(re.compile(r"^1 partition$"))).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / f"ui-dialog-{choice.lower()}.png"))
    dialog.get_by_role("button", name=launch).click()
    expect(dialog).to_have_count(0)


def _open_partition(page, url: str, partition: str, expect) -> None:
    page.goto(f"{url}/assets/company_profiles?view=partitions")
    page.get_by_placeholder(re.compile("Filter by name")).fill(partition)
    page.get_by_text(partition, exact=True).filter(visible=True).last.click()
    expect(page.get_by_text("No partition selected")).to_have_count(0)


def _new_run(platform, before: set[str]) -> str:
    """The id of the one run launched since `before` was listed."""
    def launched():
        new = [r.run_id for r in platform.instance().get_runs() if r.run_id not in before]
        assert len(new) <= 1, new
        return (new[0] if new else None), None
    return wait_while_moving("the click launched no run", launched)


def _wait_for_runs(platform, runs, quiet_s: float = 10) -> list:
    """The runs `runs()` lists, once there are some, all finished, and no new one for `quiet_s`."""
    seen, since = None, time.monotonic()

    def settled():
        nonlocal seen, since
        found = runs()
        if {r.run_id for r in found} != seen:
            seen, since = {r.run_id for r in found}, time.monotonic()
        done = found and all(r.is_finished for r in found) and time.monotonic() - since >= quiet_s
        return (found if done else None), runs_progress(found)
    return wait_while_moving("the runs did not finish", settled)


def _wait_for_backfill(platform, before: set[str]):
    def finished():
        new = [b for b in platform.instance().get_backfills() if b.backfill_id not in before]
        runs = _runs_of(platform, new[0]) if new else []
        done = new and new[0].status.value not in ("REQUESTED", "CANCELING") and all(r.is_finished for r in runs)
        return (new[0] if done else None), runs_progress(runs)
    return wait_while_moving("the backfill launched from the UI did not finish", finished)


def _runs_of(platform, backfill) -> list:
    return platform.instance().get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
