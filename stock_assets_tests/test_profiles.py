"""Profiles in two layers: the screener's columns daily, the full profile only when it is due.

Three syncs on three sessions (the platform's and the simulator's clocks set
together), in this process, on the persistent instance, against the
simulator over HTTP: a first load; a day on which one company is
reclassified and one symbol is listed; an ordinary day.
"""

from __future__ import annotations

import dagster as dg
import pytest

from fmp_simulator import BadDays, GroundTruth, SimConfig
from stock_assets import clock, trading
from stock_assets.defs.partitions import shard_of
from stock_assets.profile_refresh import todays_slice
from stock_assets.tags import SYNC_TAG
from stock_assets_tests.conftest import SYMBOLS, after_close, daily_sync, make_platform, session, set_clock

pytestmark = pytest.mark.timeout(600)


def profile_calls(platform) -> set[str]:
    return {r["params"]["symbol"] for r in platform.sim.settled_requests() if r["path"] == "profile"}


def sync_runs(platform, day) -> list[dg.DagsterRun]:
    return platform.instance().get_runs(dg.RunsFilter(tags={SYNC_TAG: f"sync-{day}"}))


def test_the_screener_layer_is_daily_and_a_full_profile_comes_only_when_due(tmp_path, monkeypatch):
    day1, day2, day3 = session(2), session(1), session(0)
    probe = GroundTruth(SimConfig(seed=11, n_symbols=SYMBOLS, split_rate_per_symbol_week=0.0, now=clock.now))
    symbols = probe.symbols()
    reclassified, listed = symbols[2], symbols[7]
    sector = next(s for s in ("Energy", "Utilities") if s != probe.profile(reclassified)["sector"])
    platform = make_platform(tmp_path, monkeypatch, now=after_close(day1), split_rate_per_symbol_week=0.0,
                             sector_changes=((reclassified, day2, sector, "Oil & Gas Midstream"),),
                             listings=((listed, day2),),
                             # listed the day of its first bar here (a listing ahead of its first trade
                             # is test_convergence's): the day it appears is the day its profile comes
                             bad_days=BadDays(pre_listing_sessions=0))
    wh = platform.resources()["warehouse"]

    def sync(day) -> set[str]:
        set_clock(monkeypatch, after_close(day))
        daily_sync(platform, day)
        return profile_calls(platform)

    try:
        first = sync(day1)
        assert listed not in first and first == set(symbols) - {listed}
        first_prices = dict(platform.sql("SELECT symbol, price FROM market.company_profiles"))

        # Day 2: the reclassified company and the new symbol; nothing else (no profile is due yet).
        called = sync(day2)
        assert called == {reclassified, listed}, called
        (stored_sector, industry, change), = platform.sql(
            "SELECT sector, industry, screener_change FROM market.company_profiles WHERE symbol = ?", [reclassified])
        assert (stored_sector, industry, change) == (sector, "Oil & Gas Midstream", None)  # fetched: flag cleared
        (ipo,), = platform.sql("SELECT ipo_date FROM market.company_profiles WHERE symbol = ?", [listed])
        assert ipo == day2  # the new symbol's full profile, the day it listed

        # A symbol whose price moved but is not due: no call, yet its daily columns are the screener's.
        # (a symbol whose close moved between the two sessions, by the simulator's own bars: a price
        # quoted to the cent can stand still for a day)
        truth = platform.sim.truth
        quiet = next(s for s in sorted(set(symbols) - called)
                     if len({b["close"] for b in truth.eod_bars(s, day1, day2)}) == 2)
        screener = next(r for r in platform.sim.truth.screener_rows() if r["symbol"] == quiet)
        (price, market_cap, fetched_at, screened_at), = platform.sql(
            "SELECT price, market_cap, fetched_at, screened_at FROM market.company_profiles WHERE symbol = ?",
            [quiet])
        assert (price, market_cap) == (screener["price"], screener["marketCap"])
        assert price != first_prices[quiet]
        assert fetched_at.date() == after_close(day1).date() and screened_at.date() == after_close(day2).date()

        # Day 3, an ordinary day a month on: the first load's full profiles 31 days old (due today,
        # not yet on day 2), yet no profile call beyond today's turn (the others wait for theirs),
        # and a handful of runs.
        shift = 31 - (after_close(day3).date() - after_close(day1).date()).days
        with platform.writer() as conn:
            conn.execute("UPDATE market.company_profiles SET fetched_at = fetched_at - to_days(CAST(? AS INTEGER)) "
                         "WHERE symbol NOT IN (?, ?)", [shift, reclassified, listed])
        turn = todays_slice(wh.profile_states(), trading.last_closed_session(after_close(day3)), 30)
        assert len(turn) <= len(symbols) // 24 + 1
        assert sync(day3) == turn
        runs = sync_runs(platform, day3)
        assert 3 <= len(runs) <= 8 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    finally:
        platform.sim.stop()


def test_a_day_of_listings_and_reclassifications_across_the_shards_is_a_few_runs(tmp_path, monkeypatch):
    """A busy ordinary day: three listings and a dozen reclassified companies, each in a shard of its
    own. A run per shard with work made such a day 18 runs for 400 symbols; the shards' work in a
    few runs of shard ranges keeps any day at 8 or fewer, and fetches the same profiles."""
    day1, day2 = session(1), session(0)
    probe = GroundTruth(SimConfig(seed=11, n_symbols=60, split_rate_per_symbol_week=0.0, now=clock.now))
    by_shard: dict[str, list[str]] = {}
    for row in probe.universe():  # symbols the sync keeps, each with a full profile to fetch
        if row["isActivelyTrading"] and not row["isFund"] and probe.profile(row["symbol"]):
            by_shard.setdefault(shard_of(row["symbol"]), []).append(row["symbol"])
    shards = sorted(by_shard)
    assert len(shards) >= 15
    listed = [by_shard[shard][0] for shard in shards[:3]]
    reclassified = [by_shard[shard][0] for shard in shards[3:15]]
    changes = tuple((s, day2, next(x for x in ("Energy", "Utilities") if x != probe.profile(s)["sector"]),
                     "Oil & Gas Midstream") for s in reclassified)
    platform = make_platform(tmp_path, monkeypatch, symbols=60, now=after_close(day1), split_rate_per_symbol_week=0.0,
                             sector_changes=changes, listings=tuple((s, day2) for s in listed),
                             bad_days=BadDays(pre_listing_sessions=0))
    try:
        for day in (day1, day2):
            set_clock(monkeypatch, after_close(day))
            daily_sync(platform, day)
        assert set(listed) | set(reclassified) <= profile_calls(platform)  # (and today's refresh turn)
        runs = sync_runs(platform, day2)
        assert len({shard_of(s) for s in listed + reclassified}) == 15  # a run each would be 18 runs
        print(f"the busy day: {len(runs)} runs for 15 shards touched")  # shown by pytest -rP
        assert len(runs) <= 8, [(r.job_name, r.tags.get("dagster/partition")) for r in runs]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    finally:
        platform.sim.stop()
