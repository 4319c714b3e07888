"""Splits: the simulator's clock passes a split between two syncs, and the stored history is restated.

The platform's clock (`trading.now_utc`) and the simulator's move together:
a first load on day 1, then day 2 after a 2-for-1 split and a 1-for-10
reverse split. The materializations run in this process (so the clock can be
set), on the persistent instance, against the simulator over HTTP.
"""

from __future__ import annotations

import datetime as dt
import os
import time

import dagster as dg
import pytest

from stock_assets import clock
from stock_assets.defs import checks
from stock_assets.defs.assets import assets_for
from stock_assets.config import Config
from stock_assets.runs.plan import plan_after_universe
from stock_assets.report import load_summary, render_summary
from stock_assets.defs.resources import SyncSettings
from stock_assets.tags import SYNC_TAG
from stock_assets_tests.conftest import SYMBOLS, after_close, daily_sync, make_platform, session, set_clock

pytestmark = pytest.mark.timeout(600)


@pytest.fixture()
def split_platform(tmp_path, monkeypatch):
    from fmp_simulator import GroundTruth, SimConfig

    day1, split_day, day2 = session(10), session(5), session(0)
    probe = GroundTruth(SimConfig(seed=11, n_symbols=SYMBOLS, split_rate_per_symbol_week=0.0, now=clock.now))
    payers = {r["symbol"] for r in probe.universe() if r["lastAnnualDividend"]}
    forward = next(s for s in probe.symbols() if s in payers)
    reverse = next(s for s in probe.symbols() if s not in payers and s[0] != forward[0])
    platform = make_platform(tmp_path, monkeypatch, now=after_close(day1), split_rate_per_symbol_week=0.0,
                             splits=((forward, split_day, 2, 1), (reverse, split_day, 1, 10)))
    yield platform, (day1, split_day, day2), (forward, reverse)
    platform.sim.stop()


def materialize(platform, asset: str, partition: str | None = None, tags=None) -> dg.ExecuteInProcessResult:
    result = dg.materialize(assets_for(Config.from_env()), selection=[asset], partition_key=partition,
                            instance=platform.instance(), resources=platform.resources(), tags=tags or {})
    assert result.success
    return result


def sync_shards(platform, day: dt.date, shards: set[str]) -> None:
    """The day's splits, then the history assets of `shards` (what the plan lays out)."""
    materialize(platform, "splits", day.isoformat())
    for shard in sorted(shards):
        materialize(platform, "price_history", shard)
        materialize(platform, "dividend_history", shard)


def stored_bars(platform, symbol: str) -> dict[str, tuple]:
    return {d.isoformat(): (o, h, low, c, v) for d, o, h, low, c, v in platform.sql(
        "SELECT date, open, high, low, close, volume FROM market.prices WHERE symbol = ? ORDER BY date", [symbol])}


def truth_bars(platform, symbol: str, first: str) -> dict[str, tuple]:
    rows = platform.sim.truth.eod_bars(symbol, dt.date.fromisoformat(first), None)
    return {r["date"]: (r["open"], r["high"], r["low"], r["close"], r["volume"]) for r in rows}


def test_a_split_between_two_syncs_is_restated(split_platform, monkeypatch):
    platform, (day1, split_day, day2), (forward, reverse) = split_platform
    set_clock(monkeypatch, after_close(day1))
    materialize(platform, "symbols")
    shards = {shard for (shard,) in platform.sql(
        "SELECT DISTINCT shard FROM market.symbols WHERE symbol IN (?, ?)", [forward, reverse])}
    sync_shards(platform, day1, shards)
    before = {s: stored_bars(platform, s) for s in (forward, reverse)}
    first = min(before[forward])
    assert before[forward] == truth_bars(platform, forward, first)

    # The clocks pass the split days.
    set_clock(monkeypatch, after_close(day2))
    materialize(platform, "symbols")
    materialize(platform, "splits", day2.isoformat())
    splits = platform.sql("SELECT symbol, numerator, denominator FROM market.splits ORDER BY symbol")
    assert sorted(splits) == sorted([(forward, 2.0, 1.0), (reverse, 1.0, 10.0)])
    planned = plan_after_universe(platform.resources()["warehouse"], platform.instance(), day2, SyncSettings(), platform.plan)
    assert {shard for p in planned if "price_history" in p.assets for shard in p.shards} >= shards

    # The split day's bars, in the new shares, as that day's daily sync stored them.
    materialize(platform, "daily_prices", split_day.isoformat())
    warehouse = platform.resources()["warehouse"]
    forward_shard = platform.sql("SELECT shard FROM market.symbols WHERE symbol = ?", [forward])[0][0]
    # The checks that would have caught it, before the restatement: both fail.
    assert not checks.splits_restated(warehouse, [forward_shard]).passed
    assert not checks.no_split_jumps(warehouse, [forward_shard]).passed

    platform.sim.clear_requests()
    for shard in sorted(shards):
        materialize(platform, "price_history", shard, tags={SYNC_TAG: "day-2"})
        materialize(platform, "dividend_history", shard, tags={SYNC_TAG: "day-2"})
    requests = platform.sim.settled_requests()
    # At most 2 calls per split symbol: its price history and its dividends (a payer).
    per_symbol = sorted((r["path"], r["params"]["symbol"]) for r in requests)
    assert per_symbol == sorted([("historical-price-eod/full", forward), ("dividends", forward),
                                 ("historical-price-eod/full", reverse)])

    for symbol in (forward, reverse):
        now = stored_bars(platform, symbol)
        assert now == truth_bars(platform, symbol, min(now)), symbol
        # Restated from its first stored day, though the history's rolling start moved on since.
        assert set(before[symbol]) <= set(now), symbol
    old, new = before[forward][first], stored_bars(platform, forward)[first]
    assert new[3] == pytest.approx(old[3] / 2, abs=0.011)
    old, new = before[reverse][min(before[reverse])], stored_bars(platform, reverse)[min(before[reverse])]
    assert new[3] == pytest.approx(old[3] * 10, rel=0.01)
    dividends = dict(platform.sql("SELECT ex_date::VARCHAR, adj_dividend FROM market.dividends WHERE symbol = ?",
                                  [forward]))
    assert dividends == {r["date"]: r["adjDividend"] for r in platform.sim.truth.dividends(forward)}

    # The restatement is its own line in the metrics, and nothing is left to restate.
    restated = platform.sql("SELECT asset, sum(items_considered) FROM metrics.optimizations "
                            "WHERE name = 'restated after split' GROUP BY 1 ORDER BY 1")
    assert restated == [("dividend_history", 1), ("price_history", 2)]
    assert warehouse.shards_needing_restatement() == set()
    text = render_summary(load_summary(warehouse, "day-2"))  # what `stock-assets report` prints
    assert "Restated after a split: 3 histories fetched again" in text, text
    assert checks.splits_restated(warehouse, [forward_shard]).passed
    assert checks.no_split_jumps(warehouse, [forward_shard]).passed


def test_prices_adjusted_matches_fmps_dividend_adjusted_history(platform):
    """The view, from stored closes and dividends, against the simulator's dividend-adjusted endpoint."""
    from stock_assets.runs.sync import run_sync

    assert run_sync(platform.config, log=lambda line: None).success
    truth = platform.sim.truth
    payers = [s for (s,) in platform.sql("SELECT DISTINCT symbol FROM market.dividends ORDER BY symbol")]
    others = [s for (s,) in platform.sql("SELECT symbol FROM market.symbols ORDER BY symbol") if s not in payers]
    symbols = (payers + others)[:20]
    assert len(symbols) == 20 and len(payers) >= 5
    compared = 0
    for symbol in symbols:
        view = dict(platform.sql("SELECT date::VARCHAR, adj_close FROM market.prices_adjusted WHERE symbol = ?",
                                 [symbol]))
        first = dt.date.fromisoformat(min(view))
        served = {r["date"]: r["adjClose"] for r in truth.dividend_adjusted(symbol, first, None)}
        assert served.keys() == view.keys(), symbol
        for day, close in served.items():
            assert view[day] == pytest.approx(close, rel=1e-6), (symbol, day)
        compared += len(served)
    (factors,), = platform.sql("SELECT count(*) FROM market.prices_adjusted WHERE dividend_factor < 1")
    assert compared > 20 * 200 and factors > 0


def test_a_delisted_symbol_keeps_its_rows_and_costs_no_more_calls(tmp_path, monkeypatch):
    """Delisted between two syncs: still in market.symbols (not listed, dated), its bars all there."""
    from fmp_simulator import GroundTruth, SimConfig

    day1, delist_day, day2 = session(10), session(5), session(0)
    probe = GroundTruth(SimConfig(seed=11, n_symbols=SYMBOLS, split_rate_per_symbol_week=0.0, now=clock.now))
    gone = probe.symbols()[7]
    platform = make_platform(tmp_path, monkeypatch, now=after_close(day1), split_rate_per_symbol_week=0.0,
                             delistings=((gone, delist_day),))
    try:
        set_clock(monkeypatch, after_close(day1))
        materialize(platform, "symbols")
        (shard,), = platform.sql("SELECT shard FROM market.symbols WHERE symbol = ?", [gone])
        sync_shards(platform, day1, {shard})
        materialize(platform, "company_profiles", shard)
        bars = platform.sql("SELECT count(*) FROM market.prices WHERE symbol = ?", [gone])[0][0]
        assert bars > 0
        set_clock(monkeypatch, after_close(day2))
        materialize(platform, "symbols")
        (listed, last_listed, delisted), = platform.sql(
            "SELECT listed, last_listed, delisted_date FROM market.symbols WHERE symbol = ?", [gone])
        assert listed is False and delisted == delist_day and last_listed is not None
        assert platform.sql("SELECT count(*) FROM market.prices WHERE symbol = ?", [gone])[0][0] == bars
        assert platform.sql("SELECT count(*) FROM market.company_profiles WHERE symbol = ?", [gone])[0][0] == 1

        # It costs no call and counts for no coverage.
        platform.sim.clear_requests()
        materialize(platform, "daily_prices", day2.isoformat())
        asked = {s for r in platform.sim.settled_requests() for s in r["params"].get("symbols", "").split(",")}
        assert gone not in asked and len(asked) > 10
        warehouse = platform.resources()["warehouse"]
        assert gone not in warehouse.universe_symbols()
        day_bars = warehouse.day_coverage(day2)
        assert gone not in day_bars.listed and not day_bars.missing
        assert len(day_bars.with_bar) == len(warehouse.universe_symbols())
    finally:
        platform.sim.stop()


def test_a_renamed_company_is_followed_under_its_new_symbol(tmp_path, monkeypatch):
    """Renamed between two syncs: its history is fetched under the new symbol, and the lineage view
    links the old symbol's rows to it."""
    from fmp_simulator import GroundTruth, SimConfig

    day1, rename_day, day2 = session(10), session(5), session(0)
    old = GroundTruth(SimConfig(seed=11, n_symbols=SYMBOLS, split_rate_per_symbol_week=0.0, now=clock.now)).symbols()[9]
    new = "ZQRN"
    platform = make_platform(tmp_path, monkeypatch, now=after_close(day1), split_rate_per_symbol_week=0.0,
                             renames=((old, new, rename_day),))
    try:
        set_clock(monkeypatch, after_close(day1))
        materialize(platform, "symbols")
        (old_shard,), = platform.sql("SELECT shard FROM market.symbols WHERE symbol = ?", [old])
        sync_shards(platform, day1, {old_shard})
        old_bars = platform.sql("SELECT count(*) FROM market.prices WHERE symbol = ?", [old])[0][0]
        assert old_bars > 0
        set_clock(monkeypatch, after_close(day2))
        materialize(platform, "symbols")
        assert platform.sql("SELECT old_symbol, new_symbol, date FROM market.symbol_changes") == [
            (old, new, rename_day)]
        (new_shard,), = platform.sql("SELECT shard FROM market.symbols WHERE symbol = ? AND listed", [new])
        planned = plan_after_universe(platform.resources()["warehouse"], platform.instance(), day2, SyncSettings(), platform.plan)
        assert any(new_shard in p.shards and "price_history" in p.assets for p in planned)
        sync_shards(platform, day2, {new_shard})

        stored = stored_bars(platform, new)
        assert stored == truth_bars(platform, new, min(stored))  # the whole history, under the new symbol
        assert platform.sql("SELECT count(*) FROM market.prices WHERE symbol = ?", [old])[0][0] == old_bars
        (listed,), = platform.sql("SELECT listed FROM market.symbols WHERE symbol = ?", [old])
        assert listed is False
        lineage = dict(platform.sql("SELECT symbol, current_symbol FROM market.symbol_lineage "
                                    "WHERE current_symbol = ?", [new]))
        assert lineage == {old: new, new: new}
        followed = platform.sql("""
            SELECT count(DISTINCT p.symbol), count(*) FROM market.prices p
            JOIN market.symbol_lineage l USING (symbol) WHERE l.current_symbol = ?""", [new])
        assert followed == [(2, old_bars + len(stored))]
    finally:
        platform.sim.stop()


@pytest.mark.scenario
@pytest.mark.slow
def test_a_sync_killed_mid_restatement_is_completed_and_never_shows_a_mix(tmp_path, monkeypatch):
    """Readers beside a restatement that is killed, then completed by backfill-failed: each read
    of a symbol's bars before its split is all in the old shares or all in the new."""
    import os
    import signal
    import threading

    from stock_assets.warehouse import WarehouseResource
    from stock_assets_tests.test_interruptions import cli, start_sync

    platform = make_platform(tmp_path, monkeypatch, split_rate_per_symbol_week=0.0)
    try:
        assert cli(tmp_path, "sync").returncode == 0
        # A 2-for-1 split 10 sessions ago that every stored history predates: their older bars
        # in the old shares (twice the price), as FMP served them before the split.
        split_day = session(10)
        symbols = [s for (s,) in platform.sql("SELECT DISTINCT symbol FROM market.prices ORDER BY 1")]
        with platform.writer() as conn:
            conn.execute("INSERT INTO market.splits SELECT DISTINCT symbol, ?, 2, 1, now() FROM market.prices",
                         [split_day])
            conn.execute("UPDATE market.prices SET open = open * 2, high = high * 2, low = low * 2, "
                         "close = close * 2 WHERE date < ?", [split_day])
            conn.execute("UPDATE market.history_loads SET end_date = ? WHERE dataset = 'prices'",
                         [split_day - dt.timedelta(days=1)])
        truth = {s: {r["date"]: r["close"] for r in platform.sim.truth.eod_bars(s, split_day - dt.timedelta(60),
                                                                                 split_day - dt.timedelta(1))}
                 for s in symbols}

        mixes, reads, stop = [], [0], threading.Event()
        warehouse = WarehouseResource(database=str(platform.db))

        def units(symbol: str) -> set[float]:
            rows = warehouse.query("SELECT date::VARCHAR AS d, close FROM market.prices WHERE symbol = ? "
                                   "AND date < ? AND date >= ?", [symbol, split_day, split_day - dt.timedelta(60)])
            return {round(r["close"] / truth[symbol][r["d"]]) for r in rows if r["d"] in truth[symbol]}

        def read_beside() -> None:
            while not stop.is_set():
                for symbol in symbols:
                    seen = units(symbol)
                    reads[0] += 1
                    if len(seen) > 1:
                        mixes.append((symbol, seen))
                    time.sleep(0.02)  # a reader, not a lock held on the writers

        reader = threading.Thread(target=read_beside, daemon=True)
        reader.start()
        platform.sim.faults.latency_s = 0.3  # history fetches slow enough to be cut short
        platform.sim.clear_requests()
        proc, log = start_sync(platform, tmp_path)
        deadline = time.monotonic() + 180
        # Kill as soon as a first restated history is committed (one quick query a look: a fixed pause
        # after the first fetches once landed before any commit on a loaded CI machine).
        day_all_hold = max(set.intersection(*(set(closes) for closes in truth.values())))

        def any_restated() -> bool:
            rows = warehouse.query("SELECT symbol, close FROM market.prices WHERE date = ?", [day_all_hold])
            return any(round(r["close"] / truth[r["symbol"]][day_all_hold]) == 1 for r in rows)

        while not any_restated():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the sync and its workers, mid-restatement
        proc.wait(timeout=30)
        left = [s for s in symbols if units(s) == {2}]
        assert 0 < len(left) < len(symbols), "the kill did not land mid-restatement"

        platform.sim.faults.latency_s = 0.0
        done = cli(tmp_path, "backfill-failed")
        assert done.returncode == 0, done.stdout + done.stderr
        stop.set()
        reader.join(timeout=60)
        assert all(units(s) == {1} for s in symbols)  # every history restated
        assert reads[0] > len(symbols) and mixes == []
    finally:
        platform.sim.stop()


@pytest.mark.scenario
@pytest.mark.slow
def test_one_daily_sync_after_a_split_a_reverse_split_a_rename_and_a_delisting(tmp_path, monkeypatch):
    """Beside a twin without corporate actions: the sync's calls grow by no more than 3 plus 2 per split symbol."""
    from fmp_simulator import GroundTruth, SimConfig

    # Two sessions apart (the day-2 sync stores both), the actions on the one between.
    day1, action_day, day2 = session(2), session(1), session(0)
    probe = GroundTruth(SimConfig(seed=11, n_symbols=SYMBOLS, split_rate_per_symbol_week=0.0, now=clock.now))
    payers = [s for s in probe.symbols() if s in {r["symbol"] for r in probe.universe() if r["lastAnnualDividend"]}]
    others = [s for s in probe.symbols() if s not in payers]
    forward, reverse, old, gone = payers[0], others[0], others[1], others[2]
    new = "ZQRN"
    actions = dict(splits=((forward, action_day, 2, 1), (reverse, action_day, 1, 10)),
                   renames=((old, new, action_day),), delistings=((gone, action_day),))
    twin_dir, real_dir = tmp_path / "twin", tmp_path / "real"
    twin_dir.mkdir(), real_dir.mkdir()
    twin = make_platform(twin_dir, monkeypatch, now=after_close(day1), split_rate_per_symbol_week=0.0)
    twin_env = {k: os.environ[k] for k in ("DAGSTER_HOME", "STOCK_ASSETS_DB", "FMP_BASE_URL", "FMP_LIMITER_STATE")}
    real = make_platform(real_dir, monkeypatch, now=after_close(day1), split_rate_per_symbol_week=0.0, **actions)
    real_env = {k: os.environ[k] for k in twin_env}
    calls = {}
    try:
        for day in (day1, day2):
            set_clock(monkeypatch, after_close(day))
            for name, platform, env in (("twin", twin, twin_env), ("real", real, real_env)):
                for key, value in env.items():
                    monkeypatch.setenv(key, value)
                calls[name, day] = daily_sync(platform, day)
        splits = 2
        assert calls["real", day2] <= calls["twin", day2] + 3 + 2 * splits, calls

        for symbol in (forward, reverse):  # restated: every stored bar as FMP serves it now
            stored = stored_bars(real, symbol)
            assert stored == truth_bars(real, symbol, min(stored)), symbol
        dividends = dict(real.sql("SELECT ex_date::VARCHAR, adj_dividend FROM market.dividends WHERE symbol = ?",
                                  [forward]))
        assert dividends == {r["date"]: r["adjDividend"] for r in real.sim.truth.dividends(forward)}
        stored = stored_bars(real, new)  # the renamed company, under its new symbol, linked to the old
        assert stored == truth_bars(real, new, min(stored))
        assert dict(real.sql("SELECT symbol, current_symbol FROM market.symbol_lineage WHERE current_symbol = ?",
                             [new])) == {old: new, new: new}
        (listed, delisted), = real.sql("SELECT listed, delisted_date FROM market.symbols WHERE symbol = ?", [gone])
        assert listed is False and delisted == action_day
        assert real.sql("SELECT count(*) FROM market.prices WHERE symbol = ?", [gone])[0][0] > 0
    finally:
        twin.sim.stop()
        real.sim.stop()
