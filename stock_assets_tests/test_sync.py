"""The daily sync end to end: simulator over HTTP, DuckDB file, persistent Dagster instance."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from stock_assets import clock, trading
from stock_assets.defs.assets.prices import history_start
from stock_assets.defs.partitions import SHARD_KEYS, shard_of, symbol_shards
from stock_assets_tests.conftest import PINNED_NOW, TEST_TRADING_DAYS_START, after_close, configured_trading_days
from stock_assets.defs.assets.common import FMP_POOL
from stock_assets.runs.instance_health import pool_limit
from stock_assets.runs.plan import failed_and_missing, shards_of_run
from stock_assets.runs.recovery import relaunch
from stock_assets.defs.resources import SyncSettings
from stock_assets.runs.sync import run_sync

DATA_COLUMNS = {
    "market.symbols": "symbol, company_name, exchange_short_name, market_cap, last_annual_dividend, shard",
    "market.prices": "symbol, date, open, high, low, close, volume, source",
    "market.dividends": "symbol, ex_date, record_date, payment_date, declaration_date, dividend, adj_dividend, frequency",
    "market.company_profiles": "symbol, company_name, full_time_employees, ipo_date, beta, market_cap",
}


def covered_shards(platform, outcome) -> list[str]:
    """The shards a sync's run covered, read from the run's own tags in the instance."""
    return shards_of_run(platform.instance().get_run_by_id(outcome.run_id).tags)


def snapshot(platform) -> dict[str, list[tuple]]:
    return {table: platform.sql(f"SELECT {cols} FROM {table} ORDER BY ALL") for table, cols in DATA_COLUMNS.items()}


def test_sync_matches_ground_truth_and_a_second_sync_changes_nothing(platform):
    truth = platform.sim.truth
    outcome = run_sync(platform.config, log=lambda line: None)
    assert outcome.success, [r.description for r in outcome.failed]
    # The universe, the day's splits, the session, and the shards in a few runs (however many shards
    # the day touches), each a range of shards: together they cover every shard that holds symbols.
    present = {shard for (shard,) in platform.sql("SELECT DISTINCT shard FROM market.symbols")}
    runs_at_once = pool_limit(platform.instance(), FMP_POOL)
    assert len(present) > runs_at_once
    assert 3 < len(outcome.runs) <= 3 + runs_at_once
    covered = [covered_shards(platform, r) for r in outcome.runs[3:]]
    assert present <= set().union(*covered) and sum(map(len, covered)) == len(set().union(*covered))

    expected = {r["symbol"] for r in truth.universe() if r["isActivelyTrading"] and not r["isFund"]}
    stored = {s for (s,) in platform.sql("SELECT symbol FROM market.symbols")}
    assert stored == expected
    assert all(shard == shard_of(s) for s, shard in platform.sql("SELECT symbol, shard FROM market.symbols"))

    end = trading.last_closed_session()
    start = history_start(SyncSettings(), end)
    for symbol in sorted(expected)[:12]:
        want = {(b["date"], round(b["close"], 6), b["volume"])
                for b in truth.eod_bars(symbol, start, end)}
        got = {(d.isoformat(), round(c, 6), v) for d, c, v in platform.sql(
            "SELECT date, close, volume FROM market.prices WHERE symbol = ?", [symbol])}
        assert got == want, symbol
        want_divs = {(d["date"], d["dividend"]) for d in truth.dividends(symbol)}
        got_divs = {(d.isoformat(), v) for d, v in platform.sql(
            "SELECT ex_date, dividend FROM market.dividends WHERE symbol = ?", [symbol])}
        assert got_divs == want_divs, symbol
        profile = truth.profile(symbol)
        (name, employees), = platform.sql(
            "SELECT company_name, full_time_employees FROM market.company_profiles WHERE symbol = ?", [symbol])
        assert name == profile["companyName"]
        assert employees == (int(float(profile["fullTimeEmployees"])) if profile["fullTimeEmployees"] else None)

    first = snapshot(platform)
    platform.sim.clear_requests()
    again = run_sync(platform.config, log=lambda line: None)
    assert again.success
    assert snapshot(platform) == first
    # Nothing was fetched twice: only the universe and the day's splits and dividend
    # calendars, and no shard had work left, so the second sync was three runs.
    paths = {r["path"] for r in platform.sim.requests()}
    assert paths <= {"company-screener", "delisted-companies", "symbol-change", "splits-calendar",
                     "dividends-calendar"}, paths
    assert len(again.runs) == 3


@pytest.mark.scenario  # a sync with a symbol failing on every retry, then its backfill: ~2 minutes, run by CI after the default run
def test_failed_shard_is_failed_and_backfill_fetches_only_what_is_missing(platform):
    truth = platform.sim.truth
    universe = sorted(r["symbol"] for r in truth.universe() if r["isActivelyTrading"] and not r["isFund"])
    by_shard: dict[str, list[str]] = {}
    for symbol in universe:
        by_shard.setdefault(shard_of(symbol), []).append(symbol)
    shard, members = max(by_shard.items(), key=lambda item: len(item[1]))
    assert len(members) >= 2
    broken = members[0]
    platform.sim.faults.failing_symbols = frozenset({broken})

    outcome = run_sync(platform.config, log=lambda line: None)
    failed, = outcome.failed  # the run whose range holds the shard; the other runs succeeded
    failed_shards = covered_shards(platform, failed)
    assert shard in failed_shards

    instance = platform.instance()
    status = instance.get_status_by_partition(dg.AssetKey("company_profiles"), SHARD_KEYS, symbol_shards)
    assert all(status[k] == dg.AssetPartitionStatus.FAILED for k in failed_shards)
    present = {s for (s,) in platform.sql("SELECT DISTINCT shard FROM market.symbols")}
    assert all(status[k] == dg.AssetPartitionStatus.MATERIALIZED for k in present - set(failed_shards))
    # What the failed shard did fetch was written at once (checkpointed per chunk).
    stored = {s for (s,) in platform.sql("SELECT symbol FROM market.company_profiles")}
    assert set(members) - {broken} <= stored and broken not in stored

    platform.sim.faults.failing_symbols = frozenset()
    platform.sim.clear_requests()
    todo = failed_and_missing(instance, platform.config)
    assert {shard for p in todo for shard in p.shards} == set(failed_shards)
    outcomes = relaunch(instance, platform.config, todo, log=lambda line: None)
    assert all(o.success for o in outcomes)

    per_symbol = [r for r in platform.sim.requests()
                  if r["path"] in ("profile", "historical-price-eod/full", "dividends")]
    assert per_symbol and {r["params"]["symbol"] for r in per_symbol} == {broken}
    status = platform.instance().get_status_by_partition(dg.AssetKey("company_profiles"), SHARD_KEYS, symbol_shards)
    assert status[shard] == dg.AssetPartitionStatus.MATERIALIZED
    assert failed_and_missing(platform.instance(), platform.config) == []


def test_after_a_sync_no_partition_the_warehouse_holds_is_missing(platform):
    """Days the history load stored, holidays and empty shards show materialized, each saying why."""
    assert run_sync(platform.config, log=lambda line: None).success
    instance = platform.instance()
    trading_days = configured_trading_days()
    days = trading_days.get_partition_keys(current_time=trading.now_utc())
    present = {s for (s,) in platform.sql("SELECT DISTINCT shard FROM market.symbols")}
    assert set(SHARD_KEYS) - present  # a small universe leaves shards empty
    for asset in ("daily_prices", "dividends"):
        status = instance.get_status_by_partition(dg.AssetKey(asset), days, trading_days)
        assert [d for d in days if status.get(d) is None] == [], asset
    for asset in ("company_profiles", "price_history", "dividend_history"):
        status = instance.get_status_by_partition(dg.AssetKey(asset), SHARD_KEYS, symbol_shards)
        assert all(status[s] == dg.AssetPartitionStatus.MATERIALIZED for s in SHARD_KEYS), asset

    # Each says where its data came from, with the rows the day holds.
    day = next(d for d in days if trading.is_session(dt.date.fromisoformat(d)))
    record, = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("daily_prices"), asset_partitions=[day]), limit=1).records
    assert "price_history" in record.asset_materialization.description
    (rows,), = platform.sql("SELECT count(*) FROM market.prices WHERE date = ?", [day])
    assert record.asset_materialization.metadata["dagster/row_count"].value == rows > 0
    empty = sorted(set(SHARD_KEYS) - present)[0]
    record, = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("company_profiles"), asset_partitions=[empty]), limit=1).records
    assert record.asset_materialization.metadata["symbols"].value == 0

    # So "failed and missing", even every missing day since the start, has nothing to run.
    assert failed_and_missing(instance, platform.config, all_missing=True) == []


def test_with_no_key_the_sync_command_runs_on_the_built_in_simulator(tmp_path):
    """The README's `make sync` on a fresh machine: no FMP_API_KEY, so the command starts a simulator
    and every run calls it (the command read its configuration before the simulator existed, and the
    runs went to financialmodelingprep.com)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FMP_", "STOCK_ASSETS_", "DAGSTER_"))}
    env.update({"DAGSTER_HOME": str(tmp_path / "dagster_home"), "STOCK_ASSETS_DB": str(tmp_path / "stocks.sqlite"),
                "FMP_LIMITER_STATE": str(tmp_path / "limit.sqlite"), "STOCK_ASSETS_SIM_SYMBOLS": "12",
                "STOCK_ASSETS_START": TEST_TRADING_DAYS_START,
                "STOCK_ASSETS_NOW": clock.setting(after_close(PINNED_NOW.date()))})
    done = subprocess.run([str(Path(sys.executable).parent / "stock-assets"), "sync"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "using the built-in FMP simulator" in done.stdout
    assert "financialmodelingprep.com" not in done.stdout + done.stderr
