"""The metrics tables, their views, materialization metadata and asset checks, end to end.

One headless sync (`python -m stock_assets.cli sync`, which calls `run_sync()`)
runs for the whole module against the simulator over HTTP, while the test
reads the metrics through `WarehouseResource.query` and `stock-assets report
--json`. The tests below then compare what was recorded with the Dagster
instance and with the simulator's request log. The last tests add runs of
their own (a failed shard, corrupted prices), so they come last.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import dagster as dg
import pytest

from stock_assets.defs.partitions import SHARD_KEYS
from stock_assets.fmp import DEFAULT_PACE_FRACTION
from stock_assets import trading
from stock_assets.defs.assets import assets_for
from stock_assets.config import Config
from stock_assets.defs.partitions import shard_of
from stock_assets.defs.resources import fmp_resource
from stock_assets.tags import SYNC_TAG
from stock_assets.warehouse import WarehouseResource
from stock_assets_tests.conftest import PROJECT, make_platform

# Real syncs on a shared 2-core machine: well past the default 300 s when others run too.
# One worker runs the module (make test: --dist loadgroup): its fixture, a whole sync, then runs once.
pytestmark = [pytest.mark.timeout(1200), pytest.mark.xdist_group("metrics")]
SYNC_TIMEOUT_S = 900  # a loaded 2-core machine; an idle one needs well under a minute


def per_path(requests: list[dict]) -> dict[str, int]:
    return dict(collections.Counter(r["path"] for r in requests))


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stock_assets.cli", *args], cwd=PROJECT, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=timeout)


def check_evaluations(instance: dg.DagsterInstance, run_ids) -> list:
    found = []
    for run_id in run_ids:
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            found.append(entry.dagster_event.event_specific_data)
    return found


def materialize(platform, asset: str, partition: str, tags=None, **settings):
    return dg.materialize(assets_for(Config.from_env()), selection=[dg.AssetKey(asset)], partition_key=partition,
                          instance=platform.instance(), resources=platform.resources(**settings),
                          raise_on_error=False, tags=tags or {})


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    platform = make_platform(tmp_path_factory.mktemp("metrics"), monkeypatch)
    platform.sim.faults.latency_s = 0.05  # so the sync lasts while the test reads
    warehouse = WarehouseResource(database=str(platform.db))
    reads: list[tuple[bool, object]] = []  # (ok, runs counted or the error)
    report_reads: list[tuple[int, dict | None, str]] = []  # (exit code, document, stderr's tail)
    try:
        sync = subprocess.Popen([sys.executable, "-m", "stock_assets.cli", "sync"], cwd=PROJECT,
                                env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + SYNC_TIMEOUT_S
        turn = 0
        while sync.poll() is None and time.monotonic() < deadline:
            # A read opens the file read-only. While a sync process holds the
            # write lock (one short transaction at a time), the read waits,
            # retrying with backoff while one holder keeps the file up to
            # lock_timeout_s, and then runs; while the read is open, the writer
            # waits the same way. So no read fails.
            try:
                (row,) = warehouse.query("SELECT count(*) AS runs, coalesce(sum(api_calls), 0) AS calls "
                                         "FROM metrics.runs")
                reads.append((True, row["runs"]))
            except Exception as error:  # noqa: BLE001 - counted, judged by the test
                reads.append((False, repr(error)))
            if turn % 5 == 2 and len(report_reads) < 3:  # each is a new process: a few show it, more load the machine
                done = cli("report", "--json")
                try:
                    document = json.loads(done.stdout)
                except ValueError:
                    document = None
                report_reads.append((done.returncode, document, done.stderr[-2000:]))
            turn += 1
            time.sleep(0.2)
        out, err = sync.communicate(timeout=max(1.0, deadline - time.monotonic()))
        platform.sim.faults.latency_s = 0.0
        batches = {b for (b,) in platform.sql("SELECT DISTINCT batch_id FROM metrics.runs")}
        assert len(batches) == 1, f"sync exit {sync.returncode}, batches {batches}: {out[-3000:]} {err[-3000:]}"
        (batch_id,) = batches
        yield SimpleNamespace(platform=platform, returncode=sync.returncode, stdout=out, stderr=err,
                              reads=reads, report_reads=report_reads, batch_id=batch_id,
                              requests=platform.sim.settled_requests(quiet_s=0.5))
    finally:
        platform.sim.stop()
        monkeypatch.undo()


def test_reading_metrics_while_the_sync_runs_works_and_does_not_fail_it(synced):
    assert synced.returncode == 0, synced.stdout[-3000:] + synced.stderr[-3000:]
    assert "API calls per endpoint" in synced.stdout  # the sync ends with the report
    ok = [runs for good, runs in synced.reads if good]
    assert len(synced.reads) >= 5, synced.reads
    assert len(ok) == len(synced.reads), [r for r in synced.reads if not r[0]][:5]
    # The reads really overlapped the sync: some saw it part-way.
    final = platform_runs = synced.platform.sql("SELECT count(*) FROM metrics.runs")[0][0]
    assert any(0 < runs < final for runs in ok), (ok, platform_runs)
    assert synced.report_reads, "no `stock-assets report --json` ran during the sync"
    failed = [(code, stderr) for code, doc, stderr in synced.report_reads
              if code != 0 or not isinstance(doc, dict) or "latest" not in doc]
    assert not failed, (len(failed), len(synced.report_reads), failed[:3])


def test_one_runs_row_per_materialization_with_the_sync_batch(synced):
    instance = synced.platform.instance()
    runs = instance.get_runs(filters=dg.RunsFilter(tags={SYNC_TAG: synced.batch_id}))
    assert len(runs) >= 3
    # A run of a range of shards materializes each shard; its step's figures are one row, named by
    # the range as Dagster writes one ("A1...F2").
    partitions = collections.defaultdict(list)
    for run in runs:
        for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            m = entry.asset_materialization
            partitions[(run.run_id, m.asset_key.to_user_string())].append(m.partition or "")
    materialized = collections.Counter()
    for (run_id, asset), keys in partitions.items():
        keys = sorted(keys, key=lambda k: SHARD_KEYS.index(k) if k in SHARD_KEYS else -1)
        materialized[(run_id, asset, keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}")] += 1
    assert any(label.count("...") for _, _, label in materialized)  # the sync ran ranges of shards
    rows = synced.platform.sql("SELECT run_id, asset, partition, batch_id, batch_kind, status FROM metrics.runs")
    assert collections.Counter((r, a, p) for r, a, p, *_ in rows) == materialized
    assert {r[3] for r in rows} == {synced.batch_id}
    assert {r[4] for r in rows} == {"sync"}
    assert {r[5] for r in rows} == {"succeeded"}
    assert {r[0] for r in rows} == {run.run_id for run in runs}


def test_api_calls_per_endpoint_equal_the_simulator_log(synced):
    expected = per_path(synced.requests)
    recorded = dict(synced.platform.sql("SELECT endpoint, sum(calls)::BIGINT FROM metrics.api_calls GROUP BY 1"))
    assert recorded == expected
    assert {"company-screener", "batch-quote", "dividends-calendar", "profile"} <= set(recorded)
    (per_run,), = synced.platform.sql("SELECT sum(api_calls)::BIGINT FROM metrics.runs")
    assert per_run == len(synced.requests)
    # Nothing failed, so every call succeeded on its first attempt.
    (failed, retries), = synced.platform.sql("SELECT sum(failed), sum(retries) FROM metrics.api_calls")
    assert (failed, retries) == (0, 0)


def test_optimizations_name_their_savings_at_the_paced_rate(synced):
    rows = synced.platform.sql("""
        SELECT name, sum(items_considered), sum(items_skipped), sum(calls_saved), sum(seconds_saved)
        FROM metrics.optimizations GROUP BY name""")
    by_name = {name: (considered, skipped, saved, seconds) for name, considered, skipped, saved, seconds in rows}
    for name in ("batched quotes", "dividend filter", "dividend calendar"):
        assert name in by_name, by_name
        assert by_name[name][2] > 0, (name, by_name[name])
    considered, skipped, saved, _ = by_name["batched quotes"]
    assert saved == considered - math.ceil(considered / 100)  # 100 symbols per batch-quote call
    # seconds saved = calls saved / the pace the key's limit allows (per second)
    pace_per_s = fmp_resource(Config.from_env()).pace_per_min / 60
    assert pace_per_s == pytest.approx(60_000 * DEFAULT_PACE_FRACTION / 60)
    for name, _, _, calls_saved, seconds_saved in synced.platform.sql(
            "SELECT name, items_considered, items_skipped, calls_saved, seconds_saved FROM metrics.optimizations"):
        assert seconds_saved == pytest.approx(calls_saved / pace_per_s), name


def test_phases_have_plan_fetch_write_with_throughput(synced):
    rows = synced.platform.sql("""
        SELECT asset, phase, duration_s, items, items_per_s FROM metrics.phases
        WHERE asset = 'daily_prices'""")
    assert {phase for _, phase, *_ in rows} >= {"plan", "fetch", "write"}
    for asset, phase, duration, items, per_s in rows:
        assert duration >= 0
        if phase in ("fetch", "write"):
            assert items > 0 and per_s > 0, (phase, items, per_s)
            assert per_s == pytest.approx(items / duration), phase
    phases = {p for (p,) in synced.platform.sql("SELECT DISTINCT phase FROM metrics.phases")}
    assert {"plan", "fetch", "write"} <= phases


def test_views_aggregate_the_sync(synced):
    p = synced.platform
    summary = p.sql("SELECT batch_id, batch_kind, runs, steps, failed_steps, api_calls, retries, calls_saved, "
                    "seconds_saved, items_succeeded, items, item_success_rate, rows_written, duration_s "
                    "FROM metrics.sync_summary")
    assert len(summary) == 1
    (batch, kind, runs, steps, failed, calls, retries, saved, seconds, ok, items, rate, rows, duration), = summary
    assert (batch, kind, failed, retries) == (synced.batch_id, "sync", 0, 0)
    assert calls == len(synced.requests)
    (n_runs, n_steps, n_rows, n_ok, n_items), = p.sql(
        "SELECT count(DISTINCT run_id), count(*), sum(rows_written), sum(items_succeeded), sum(items_total) "
        "FROM metrics.runs")
    assert (runs, steps, rows, ok, items) == (n_runs, n_steps, n_rows, n_ok, n_items)
    (opt_calls, opt_seconds), = p.sql("SELECT sum(calls_saved), sum(seconds_saved) FROM metrics.optimizations")
    assert saved == opt_calls and seconds == pytest.approx(opt_seconds)
    assert rate == 1.0 and rows > 0
    (span,), = p.sql("SELECT epoch(max(ended_at) - min(started_at)) FROM metrics.runs")
    assert duration == pytest.approx(span) and duration > 0

    trends = p.sql("SELECT endpoint, sum(calls)::BIGINT, sum(failed) FROM metrics.endpoint_trends GROUP BY 1")
    assert {e: c for e, c, _ in trends} == per_path(synced.requests)
    assert all(f == 0 for *_, f in trends)

    savings = dict(p.sql("SELECT name, sum(calls_saved)::BIGINT FROM metrics.savings_by_day GROUP BY 1"))
    assert savings == dict(p.sql("SELECT name, sum(calls_saved)::BIGINT FROM metrics.optimizations GROUP BY 1"))

    slowest = p.sql("SELECT batch_id, duration_s FROM metrics.slowest_phases")
    assert len(slowest) == p.sql("SELECT count(*) FROM metrics.phases")[0][0]
    assert {b for b, _ in slowest} == {synced.batch_id}
    durations = [d for _, d in slowest]
    assert durations == sorted(durations, reverse=True)


def test_materialization_metadata_has_the_figures(synced):
    instance = synced.platform.instance()
    (day,), = synced.platform.sql("SELECT DISTINCT partition FROM metrics.runs WHERE asset = 'daily_prices'")
    event = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("daily_prices"), asset_partitions=[day]), limit=1).records[0].event_log_entry
    meta = event.asset_materialization.metadata
    run_id = event.run_id
    (calls, rows, route), = synced.platform.sql(
        "SELECT api_calls, rows_written, route FROM metrics.runs WHERE run_id = ? AND asset = 'daily_prices'",
        [run_id])
    assert isinstance(meta["api_calls"], dg.IntMetadataValue) and meta["api_calls"].value == calls > 0
    assert meta["api_calls/batch-quote"].value == calls
    assert meta["rows_written"].value == rows > 0
    (held,), = synced.platform.sql("SELECT count(*) FROM market.prices WHERE date = ?",
                                   [event.asset_materialization.partition])
    assert meta["dagster/row_count"].value == held >= rows  # what the day holds, however it got there
    assert meta["route"].value == route == "batch-quote"
    assert "failed_symbols" not in meta


def test_checks_pass_after_the_sync(synced):
    instance = synced.platform.instance()
    runs = instance.get_runs(filters=dg.RunsFilter(tags={SYNC_TAG: synced.batch_id}))
    evaluations = check_evaluations(instance, [r.run_id for r in runs])
    by_asset = collections.defaultdict(list)
    for e in evaluations:
        by_asset[e.asset_key.to_user_string()].append((e.check_name, e.passed))
    assert set(by_asset["daily_prices"]) == {("prices_sane", True), ("coverage", True),
                                            ("no_duplicate_keys", True), ("item_success_rate", True)}
    profiles = by_asset["company_profiles"]
    (n_shards,), = synced.platform.sql("SELECT count(DISTINCT partition) FROM metrics.runs "
                                       "WHERE asset = 'company_profiles'")
    assert profiles.count(("profiles_fresh", True)) == n_shards
    assert all(e.passed for e in evaluations), [e for e in evaluations if not e.passed]


def _largest_shard(platform) -> tuple[str, list[str]]:
    members = collections.defaultdict(list)
    for (symbol,) in platform.sql("SELECT symbol FROM market.symbols ORDER BY symbol"):
        members[shard_of(symbol)].append(symbol)
    return max(members.items(), key=lambda item: len(item[1]))


def test_failed_materialization_still_records_its_figures(synced):
    platform = synced.platform
    shard, members = _largest_shard(platform)
    assert len(members) >= 2
    platform.sim.faults.failing_symbols = frozenset(members)
    platform.sim.clear_requests()
    try:
        result = materialize(platform, "company_profiles", shard, tags={SYNC_TAG: "failing-batch"},
                             refresh=True)
        requests = platform.sim.settled_requests(quiet_s=0.5)
    finally:
        platform.sim.faults.failing_symbols = frozenset()
    assert not result.success
    (status, error, failed, batch, api_calls), = platform.sql(
        "SELECT status, error, items_failed, batch_id, api_calls FROM metrics.runs WHERE run_id = ?",
        [result.run_id])
    assert status == "failed" and batch == "failing-batch"
    assert failed == len(members)
    assert error and "items failed" in error and "backfill-failed" in error, error
    calls = dict(platform.sql("SELECT endpoint, calls FROM metrics.api_calls WHERE run_id = ?", [result.run_id]))
    assert calls == per_path(requests) and calls["profile"] == len(requests) >= len(members)
    assert api_calls == len(requests)
    (failed_attempts,), = platform.sql("SELECT failed FROM metrics.api_calls WHERE run_id = ?", [result.run_id])
    assert failed_attempts == len(requests)

    # One failed symbol below the allowed share: the partition succeeds and names it.
    broken = members[0]
    platform.sim.faults.failing_symbols = frozenset({broken})
    try:
        result = materialize(platform, "company_profiles", shard, refresh=True, max_failed_share=0.6)
    finally:
        platform.sim.faults.failing_symbols = frozenset()
    assert result.success
    (materialization,) = result.get_asset_materialization_events()
    meta = materialization.materialization.metadata
    assert meta["failed_symbols"].value == broken
    assert meta["items_failed"].value == 1
    assert {(e.check_name, e.passed) for e in result.get_asset_check_evaluations()} >= {
        ("item_success_rate", True)}
    (status,), = platform.sql("SELECT status FROM metrics.runs WHERE run_id = ?", [result.run_id])
    assert status == "succeeded"


def test_checks_fail_on_corrupt_prices(synced):
    platform = synced.platform
    day = trading.last_closed_session()
    fakes = ["ZZQA", "ZZQB", "ZZQC", "ZZQD", "ZZQE"]  # symbols the simulator has no bar for
    now = dt.datetime.now()
    with platform.writer() as conn:
        for symbol in fakes:
            conn.execute("INSERT INTO market.symbols (symbol, shard, is_actively_trading, updated_at) "
                         "VALUES (?, ?, TRUE, ?)", [symbol, shard_of(symbol), now])
        # An insane bar (low above high) for the day: already stored, so it is not fetched again.
        conn.execute("INSERT INTO market.prices (symbol, date, open, high, low, close, volume, source, loaded_at) "
                     "VALUES (?, ?, 10, 9, 12, 10, 100, 'batch-quote', ?)", [fakes[0], day, now])
    result = materialize(platform, "daily_prices", day.isoformat())
    assert result.success  # checks report, they do not block
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["prices_sane"].passed is False
    assert evaluations["prices_sane"].metadata["insane_rows"].value == 1
    # Complete: the four symbols without a bar were asked their history, which FMP answered with no
    # bar for the day; they are named with FMP's answer (the blocking check passes).
    coverage = evaluations["coverage"].metadata
    assert evaluations["coverage"].passed is True
    (active,), = platform.sql("SELECT count(*) FROM market.symbols")
    assert coverage["listed_symbols"].value == active
    assert coverage["with_bar"].value == active - (len(fakes) - 1)
    assert coverage["no_bar_at_source"].value == len(fakes) - 1 and coverage["missing"].value == 0
    assert all(f"{s}: historical-price-eod/full answered no bar" in coverage["no_bar_symbols"].value
               for s in fakes[1:])
    assert evaluations["no_duplicate_keys"].passed is True
    # The same evaluations are in the instance.
    stored = {(e.check_name, e.passed) for e in check_evaluations(platform.instance(), [result.run_id])}
    assert {("prices_sane", False), ("coverage", True)} <= stored
