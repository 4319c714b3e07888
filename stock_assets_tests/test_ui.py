"""The Dagster UI in a real browser, as a user uses it.

`dagster dev` (webserver + daemon: the project's instance config queues runs,
so the daemon must dequeue them) runs on a test instance in a temp
DAGSTER_HOME, against the FMP simulator, on a free loopback port. Headless
Chromium (Debian's package, driven by Playwright) then checks that:
  1. the catalog lists all six assets;
  2. clicking Materialize on `symbols` launches a run that the run page shows
     succeeding, and that really ran: the simulator saw `company-screener`
     requests and market.symbols has the universe;
  3. after one `daily_prices` partition is materialized, the asset's
     Partitions tab shows it materialized and every other one missing.
Screenshots land in `test-artifacts/` (ui-*.png), with the dagster dev log.
"""

from __future__ import annotations

import re
import shutil

import dagster as dg
import pytest

from stock_assets import trading
from stock_assets.assets import assets_for
from stock_assets.config import Config
from stock_assets.partitions import trading_days
from stock_assets_tests.ui_support import ARTIFACTS, chromium_path, dagster_dev, launch_chromium

ASSETS = ["symbols", "daily_prices", "price_history", "dividends", "dividend_history", "company_profiles"]
TIMEOUT_MS = 60_000  # a 2-core machine running other tests beside this one
RUN_TIMEOUT_MS = 180_000  # dequeue by the daemon, a new process that loads the code, the step


def _count(page, label: str) -> int:
    """The number in a partition-status filter such as `Missing (496)`."""
    text = page.get_by_text(re.compile(rf"^{label} \(\d+\)$")).first.inner_text(timeout=TIMEOUT_MS)
    return int(re.search(r"\((\d+)\)", text).group(1))


@pytest.mark.timeout(290)
def test_dagster_ui_shows_assets_materializes_symbols_and_partition_status(platform, tmp_path):
    if chromium_path() is None:
        pytest.fail("Chromium is missing: `apt-get install chromium` (.ci/run does it)")
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("ui-*"):
        old.unlink()
    try:
        with dagster_dev(tmp_path) as ui, launch_chromium() as browser:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            # The first visit may open a "Join the Dagster community" dialog over the page.
            page.add_locator_handler(page.get_by_role("button", name="Skip", exact=True),
                                     lambda skip: skip.click())
            try:
                _check(page, ui.url, platform)
            except BaseException:
                page.screenshot(path=str(ARTIFACTS / "ui-failure.png"))
                raise
            finally:
                context.close()
    finally:
        log = tmp_path / "dagster-dev.log"
        if log.exists():
            shutil.copy(log, ARTIFACTS / "ui-dagster-dev.log")


def _check(page, url: str, platform) -> None:
    from playwright.sync_api import expect

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
    page.get_by_role("button").filter(has_text=re.compile(r"^Materialize$")).click()
    expect(page.get_by_text(re.compile(r"^Launched run"))).to_be_visible()
    page.get_by_role("link", name="View", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
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

    # 3. One daily_prices partition materialized (in-process, on the same
    #    instance): the Partitions tab shows it materialized, the rest missing.
    day = trading.last_closed_session().isoformat()
    result = dg.materialize(assets_for(Config.from_env()), selection=["daily_prices"], partition_key=day,
                            instance=platform.instance(), resources=platform.resources())
    assert result.success
    keys_before = len(trading_days.get_partition_keys())
    page.goto(f"{url}/assets/daily_prices?view=partitions")
    expect(page.get_by_text(re.compile(r"^Materialized \(1\)$"))).to_be_visible()
    keys_after = len(trading_days.get_partition_keys())
    selected = int(re.match(r"(\d+)", page.get_by_text(re.compile(r"^\d+ Partitions? Selected$")).inner_text()).group(1))
    assert selected in {keys_before, keys_after}
    assert _count(page, "Failed") == 0
    assert _count(page, "Missing") == selected - 1
    # The materialized partition, picked from the list, shows its materialization.
    # (The timeline's end label also reads `day`: the list row is the last match.)
    page.get_by_placeholder(re.compile("Filter by name")).fill(day)
    page.get_by_text(day, exact=True).filter(visible=True).last.click()
    expect(page.get_by_text("No partition selected")).to_have_count(0)
    expect(page.get_by_text(result.run_id[:8]).first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "ui-daily-prices-partitions.png"), full_page=True)
