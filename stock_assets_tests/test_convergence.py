"""The warehouse converges to the source on ordinary bad days, and "Materialized" means complete.

Each test moves the platform's clock (which the simulator reads too) through the days a user meets:
a missed Friday synced on Monday at 11:00, a week away, a sync during a session. The expected bars
are the simulator's own official end-of-day bars (its ground truth), never the product's output.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from stock_assets import clock
from stock_assets.defs.partitions import latest_session_day
from stock_assets.runs.plan import PlannedRun, failed_and_missing
from stock_assets.runs.runner import execute
from stock_assets.tags import SYNC_TAG
from stock_assets_tests.conftest import after_close, configured_trading_days, daily_sync, make_platform, set_clock

pytestmark = pytest.mark.timeout(600)

NY = clock.NEW_YORK
# A universe over one quote batch (120 symbols): the batch edge is crossed.
SYMBOLS = 130


def bars_on(platform, day: dt.date) -> dict[str, tuple[float, int, str]]:
    return {s: (c, v, src) for s, c, v, src in platform.sql(
        "SELECT symbol, close, volume, source FROM market.prices WHERE date = ?", [day])}


def official_bars(platform, day: dt.date) -> dict[str, tuple[float, int]]:
    """The simulator's end-of-day bar of `day` for every symbol of the universe (the screener's actively
    trading stocks and ETFs, funds left out, as the platform asks), as its history serves it."""
    truth = platform.sim.truth
    out = {}
    for row in truth.universe():
        if not row["isActivelyTrading"] or row["isFund"]:
            continue
        for bar in truth.eod_bars(row["symbol"], day, day):
            out[row["symbol"]] = (bar["close"], bar["volume"])
    return out


def status(platform, day: dt.date) -> dg.AssetPartitionStatus | None:
    found = platform.instance().get_status_by_partition(dg.AssetKey("daily_prices"), [day.isoformat()],
                                                        configured_trading_days())
    return (found or {}).get(day.isoformat())


def test_a_missed_friday_synced_on_monday_at_11_stores_fridays_official_bars(tmp_path, monkeypatch):
    thursday, friday, monday = dt.date(2026, 12, 3), dt.date(2026, 12, 4), dt.date(2026, 12, 7)
    platform = make_platform(tmp_path, monkeypatch, symbols=SYMBOLS, now=after_close(thursday))
    try:
        daily_sync(platform, thursday)
        # Friday is missed. Monday, 11:00 New York: Monday's session is under way; quotes are Monday's.
        set_clock(monkeypatch, dt.datetime(2026, 12, 7, 11, 0, tzinfo=NY))
        assert latest_session_day() == friday
        daily_sync(platform, friday)

        stored, official = bars_on(platform, friday), official_bars(platform, friday)
        assert len(official) == SYMBOLS
        assert {s: (c, v) for s, (c, v, _) in stored.items()} == official
        # Official bars: none of Friday's bars is a Monday quote taken as Friday's.
        assert {src for _, _, src in stored.values()} == {"historical-price-eod/full"}
        assert platform.sql("SELECT count(*) FROM market.prices WHERE date = ?", [monday]) == [(0,)]
        assert status(platform, friday) == dg.AssetPartitionStatus.MATERIALIZED
    finally:
        platform.sim.stop()


def test_a_week_away_stores_every_session_missed_with_one_history_call_a_symbol(tmp_path, monkeypatch):
    first, back = dt.date(2026, 11, 23), dt.date(2026, 12, 4)
    platform = make_platform(tmp_path, monkeypatch, now=after_close(first))
    try:
        daily_sync(platform, first)
        set_clock(monkeypatch, after_close(back))
        daily_sync(platform, back)
        history_calls = [r for r in platform.sim.settled_requests() if r["path"] == "historical-price-eod/full"]
        listed = len(official_bars(platform, back))
        # Thanksgiving (11-26) is no session; the half day (11-27) is one.
        missed = [dt.date(2026, 11, d) for d in (24, 25, 27, 30)] + [dt.date(2026, 12, d) for d in (1, 2, 3)]
        for day in missed + [back]:
            stored = bars_on(platform, day)
            assert {s: (c, v) for s, (c, v, _) in stored.items()} == official_bars(platform, day), day
            assert status(platform, day) == dg.AssetPartitionStatus.MATERIALIZED, day
        # One call a symbol from the oldest missed session through the latest fills the gap.
        assert len(history_calls) <= listed + 2, len(history_calls)
        assert {r["params"]["from"] for r in history_calls} <= {"2026-11-24"}
    finally:
        platform.sim.stop()


def test_a_sync_during_a_session_stores_the_closed_sessions_and_never_the_one_in_progress(tmp_path, monkeypatch):
    wednesday, thursday, friday = dt.date(2026, 12, 2), dt.date(2026, 12, 3), dt.date(2026, 12, 4)
    platform = make_platform(tmp_path, monkeypatch, now=after_close(wednesday))
    try:
        daily_sync(platform, wednesday)
        set_clock(monkeypatch, dt.datetime(2026, 12, 4, 14, 30, tzinfo=NY))  # Friday, mid-session
        daily_sync(platform, latest_session_day())
        assert {s: (c, v) for s, (c, v, _) in bars_on(platform, thursday).items()} == official_bars(
            platform, thursday)
        assert bars_on(platform, friday) == {}
        assert status(platform, friday) is None
    finally:
        platform.sim.stop()


def test_a_day_missing_a_symbol_ends_failed_naming_it_and_backfill_failed_mends_it(tmp_path, monkeypatch):
    day = dt.date(2026, 12, 4)
    platform = make_platform(tmp_path, monkeypatch, now=after_close(dt.date(2026, 12, 3)))
    try:
        daily_sync(platform, dt.date(2026, 12, 3))
        # Monday 11:00: Friday's route is each symbol's end-of-day history.
        set_clock(monkeypatch, dt.datetime(2026, 12, 7, 11, 0, tzinfo=NY))
        broken = sorted(official_bars(platform, day))[3]
        # FMP answers it with a row that cannot be valid (rejected, kept in market.rejected_rows): one
        # symbol short of complete. (A symbol whose every call fails ends the same way, after the retries.)
        platform.sim.faults.update({"invalid_row_symbols": [broken]})
        instance = platform.instance()
        outcome = execute(instance, platform.config, PlannedRun(("daily_prices",), day.isoformat()), {SYNC_TAG: "sync-x"})
        assert not outcome.success
        assert broken in (outcome.error or ""), outcome.error
        assert status(platform, day) == dg.AssetPartitionStatus.FAILED
        assert broken not in bars_on(platform, day)

        # The route that mends Failed partitions mends it: only the missing symbol is asked.
        platform.sim.faults.update({"invalid_row_symbols": []})
        todo = [p for p in failed_and_missing(instance, platform.config) if p.partition_key == day.isoformat()]
        assert todo and "daily_prices" in todo[0].assets
        platform.sim.clear_requests()
        assert execute(instance, platform.config, PlannedRun(("daily_prices",), day.isoformat()), {SYNC_TAG: "mend"}).success
        asked = {s for r in platform.sim.settled_requests() for s in
                 (r["params"].get("symbols") or r["params"].get("symbol") or "").split(",") if s}
        assert asked == {broken}
        assert status(platform, day) == dg.AssetPartitionStatus.MATERIALIZED
        assert {s: (c, v) for s, (c, v, _) in bars_on(platform, day).items()}[broken] == official_bars(
            platform, day)[broken]
    finally:
        platform.sim.stop()


# -- a month of ordinary bad days ---------------------------------------------------------

@pytest.mark.scenario
@pytest.mark.slow
@pytest.mark.timeout(2400)  # 22 syncs: ~280 s on the DuckDB file, over 600 s on the lake beside the other scenarios
def test_a_month_of_bad_days_ends_with_the_warehouse_equal_to_the_source(tmp_path, monkeypatch):
    """22 sessions of daily syncs against an FMP that has every ordinary bad day, more often than
    life does so that each happens: short screener pages (on pages of 8 rows), specials beside
    regular dividends, payers with a null lastAnnualDividend, a split listed and adjusted two
    sessions late, revised bars, an IPO in the screener before its first bar, empty profiles, a
    missed Friday synced on Monday at 11:00, a sync during a session. At the end the warehouse holds
    what FMP serves, but for the bars still inside their confirmation bound (quote-derived, younger
    than one refresh cycle), and every trading-day partition is Materialized."""
    from fmp_simulator import BadDays, GroundTruth, SimConfig
    from stock_assets.defs.assets import universe

    sessions = [d for d in trading_sessions(dt.date(2026, 11, 4), dt.date(2026, 12, 4))]
    probe = GroundTruth(SimConfig(seed=11, n_symbols=40, now=after_close(sessions[-1])))
    names = probe.symbols()
    split_symbol, ipo = names[5], names[17]
    bad = BadDays(special_dividend_p=0.3, null_last_dividend_p=0.3, revision_p=0.05, short_page_p=0.3,
                  empty_profile_p=0.08, quote_close_diff_p=0.3)
    monkeypatch.setattr(universe, "SCREENER_PAGE", 8)  # pages of 8 rows: the page edge is crossed daily
    monkeypatch.setenv("STOCK_ASSETS_PROFILE_MAX_AGE_DAYS", "7")  # a cycle of 7 sessions: 3 in the month
    platform = make_platform(tmp_path, monkeypatch, symbols=40, now=after_close(sessions[0]), bad_days=bad,
                             split_rate_per_symbol_week=0.0,
                             splits=((split_symbol, sessions[9], 2, 1, 2),),  # listed 2 sessions late
                             listings=((ipo, sessions[14]),))
    truth = platform.sim.truth
    try:
        missed_friday, during = dt.date(2026, 11, 20), dt.date(2026, 12, 1)
        for day in sessions:
            if day == missed_friday:
                continue
            if day == missed_friday + dt.timedelta(days=3):  # Monday 11:00: Friday's sync, late
                set_clock(monkeypatch, dt.datetime(2026, 11, 23, 11, 0, tzinfo=NY))
                daily_sync(platform, latest_session_day())
            if day == during:  # mid-session: the sessions closed so far, never this one
                set_clock(monkeypatch, dt.datetime(2026, 12, 1, 12, 0, tzinfo=NY))
                daily_sync(platform, latest_session_day())
            set_clock(monkeypatch, after_close(day))
            daily_sync(platform, day)
        # Monday 11:00 after the last Friday: the last sync a user would make.
        set_clock(monkeypatch, dt.datetime(2026, 12, 7, 11, 0, tzinfo=NY))
        daily_sync(platform, latest_session_day())

        # Each bad day happened.
        assert truth.special_dividends() and truth.null_payers() and truth.empty_profiles()
        assert [s["symbol"] for s in truth.late_splits()] == [split_symbol]
        assert any(r["visible"] for r in truth.revisions(sessions[0], sessions[-1]))
        assert any(p["symbol"] == ipo for p in truth.pre_listings())

        listed = sorted(official_bars(platform, sessions[-1]).keys() | {ipo})
        assert [s for (s,) in platform.sql("SELECT symbol FROM market.symbols WHERE listed ORDER BY 1")] == listed
        # The bound: a bar taken from a quote, or revised by FMP, within the last refresh cycle (7
        # sessions) may still await its symbol's turn to be confirmed.
        cycle_start = trading_sessions(sessions[-1] - dt.timedelta(days=12), sessions[-1])[-7].isoformat()
        revised_late = {(r["symbol"], r["date"]) for r in truth.revisions(sessions[0], sessions[-1])
                        if r["visibleFrom"] >= cycle_start}
        differing = []
        for symbol in listed:
            served = {b["date"]: (b["close"], b["volume"]) for b in truth.eod_bars(symbol, sessions[0], sessions[-1])}
            stored = {d.isoformat(): (c, v, src) for d, c, v, src in platform.sql(
                "SELECT date, close, volume, source FROM market.prices WHERE symbol = ? AND date >= ?",
                [symbol, sessions[0]])}
            assert stored.keys() == served.keys(), symbol
            differing += [(symbol, d) for d, (c, v, src) in stored.items() if (c, v) != served[d]
                          and not (src == "batch-quote" and d >= cycle_start) and (symbol, d) not in revised_late]
            dividends = {(r["date"], r["dividend"], r["frequency"]) for r in truth.dividends(symbol)}
            assert {(d.isoformat(), a, f) for d, a, f in platform.sql(
                "SELECT ex_date, dividend, frequency FROM market.dividends WHERE symbol = ?", [symbol])} == dividends
        assert differing == []
        # The split's history was restated into the new shares: no split jump on its ex-date.
        first = platform.sql("SELECT min(date) FROM market.prices WHERE symbol = ?", [split_symbol])[0][0]
        assert {d.isoformat(): c for d, c in platform.sql(
            "SELECT date, close FROM market.prices WHERE symbol = ?", [split_symbol])} == {
            b["date"]: b["close"] for b in truth.eod_bars(split_symbol, first, sessions[-1])}
        # Empty profiles: none stored, asked on a backoff (not on each of the 22 days).
        empty = truth.empty_profiles()
        assert platform.sql("SELECT count(*) FROM market.company_profiles WHERE symbol IN (SELECT unnest(?))",
                            [empty]) == [(0,)]
        for symbol, attempts in platform.sql("SELECT symbol, attempts FROM market.empty_answers "
                                             "WHERE dataset = 'profile'"):
            assert symbol in empty and 2 <= attempts <= 6, (symbol, attempts)
        for day in sessions:
            assert status(platform, day) == dg.AssetPartitionStatus.MATERIALIZED, day
        (repaired,), = platform.sql("SELECT sum(revisions_repaired) FROM metrics.runs")
        assert repaired > 0
    finally:
        platform.sim.stop()


def trading_sessions(first: dt.date, last: dt.date) -> list[dt.date]:
    """NYSE sessions from `first` to `last` by the exchange calendar (not the product's own list)."""
    import exchange_calendars

    cal = exchange_calendars.get_calendar("XNYS", start="2025-01-02")
    return [ts.date() for ts in cal.sessions_in_range(first.isoformat(), last.isoformat())]
