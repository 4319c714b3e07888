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
from stock_assets.partitions import latest_session_day
from stock_assets.plan import PlannedRun, failed_and_missing
from stock_assets.runner import execute
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
    platform = make_platform(tmp_path, monkeypatch, symbols=SYMBOLS, now=after_close(wednesday))
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
        outcome = execute(instance, PlannedRun(("daily_prices",), day.isoformat()), {SYNC_TAG: "sync-x"})
        assert not outcome.success
        assert broken in (outcome.error or ""), outcome.error
        assert status(platform, day) == dg.AssetPartitionStatus.FAILED
        assert broken not in bars_on(platform, day)

        # The route that mends Failed partitions mends it: only the missing symbol is asked.
        platform.sim.faults.update({"invalid_row_symbols": []})
        todo = [p for p in failed_and_missing(instance) if p.partition_key == day.isoformat()]
        assert todo and "daily_prices" in todo[0].assets
        platform.sim.clear_requests()
        assert execute(instance, PlannedRun(("daily_prices",), day.isoformat()), {SYNC_TAG: "mend"}).success
        asked = {s for r in platform.sim.settled_requests() for s in
                 (r["params"].get("symbols") or r["params"].get("symbol") or "").split(",") if s}
        assert asked == {broken}
        assert status(platform, day) == dg.AssetPartitionStatus.MATERIALIZED
        assert {s: (c, v) for s, (c, v, _) in bars_on(platform, day).items()}[broken] == official_bars(
            platform, day)[broken]
    finally:
        platform.sim.stop()
