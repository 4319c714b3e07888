"""When a symbol's full profile is fetched: the second layer of `market.company_profiles`.

The first layer (price, market cap, beta, volume, last dividend, trading
status, name, sector, industry, exchange) is rewritten every day from the
universe refresh's `company-screener` pages at no extra call. A full `profile`
call (one per symbol) is made only when:

- the symbol has no profile yet (new to the universe): the same day;
- the screener showed its name, sector, industry or exchange change: a company
  that is renamed, reclassified or moves exchange has likely changed the rest
  too (description, CEO, address...). Price, market cap and volume change
  every day and say nothing about the rest, so they never trigger one;
- its full profile is older than `profile_max_age_days` and its slice of the
  universe has its turn: the universe, in shard order, is cut into one slice
  per session of the refresh cycle (24 sessions for 30 days), and each session
  refreshes its slice. A slice falls in two to four shards, so an ordinary day
  plans a few shard runs instead of one per shard. The cycle is long enough
  that a turn never comes before the slice is due (its span is always more
  than `profile_max_age_days`: 32 to 39 days for 30), so each profile is
  fetched once a cycle, on the first turn after it is due;
- or it missed its turn: its slice's last turn came after it was due, and the
  platform did not run that day. Then it is due at once.

Measured (bench/bench_daily.py, 19,205 symbols, Premium, the day's turn due):
a per-symbol slot on a 7-day cycle (the baseline) made 2,809 profile calls a
day in a run for every one of the 38 shards that hold symbols; a cycle of 20
sessions made 960 in 3 shard runs; 24 sessions make 800, which with the
session's 161 quote calls keeps a Premium day under 1,000 calls.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from stock_assets import trading
from stock_assets.defs.partitions import SHARD_KEYS
from stock_assets.warehouse import ProfileState

NEW = "new symbol"
TURN = "refresh turn"
MISSED_TURN = "missed its refresh turn"
# A full profile is this much past its due age at most, in a steady cycle (24 sessions
# span 32 to 39 days, holidays included) or awaiting its first turn after a first load.
FRESHNESS_SLACK_DAYS = 40


def cycle_sessions(max_age_days: int) -> int:
    """Sessions in one refresh cycle: the sessions of `max_age_days` rounded up, plus two (24 for
    30 days), so that the span of a cycle, from any weekday, is always longer than `max_age_days`."""
    return -(-max_age_days * 5 // 7) + 2


def slices(states: Iterable[ProfileState], max_age_days: int) -> dict[str, int]:
    """Each symbol's slice (its turn in the cycle): the universe in shard order, cut in equal slices."""
    order = {shard: i for i, shard in enumerate(SHARD_KEYS)}
    symbols = sorted((order.get(s.shard, len(order)), s.symbol) for s in states)
    cycle = cycle_sessions(max_age_days)
    return {symbol: i * cycle // len(symbols) for i, (_, symbol) in enumerate(symbols)}


def todays_slice(states: Iterable[ProfileState], day: dt.date, max_age_days: int) -> set[str]:
    """The symbols whose turn is the session `day`."""
    turn = trading.session_number(day) % cycle_sessions(max_age_days)
    return {symbol for symbol, k in slices(states, max_age_days).items() if k == turn}


def due_profiles(states: list[ProfileState], day: dt.date, today: dt.date,
                 max_age_days: int) -> dict[str, str]:
    """Symbol -> why its full profile is due on the session `day` (UTC date `today`)."""
    cycle, number = cycle_sessions(max_age_days), trading.session_number(day)
    sessions = trading.calendar().sessions
    # The session of each slice's last turn (today's for today's slice).
    last_turn = [sessions[number - (number - k) % cycle].date() for k in range(cycle)]
    slice_of = slices(states, max_age_days)
    due = {}
    for state in states:
        turn = last_turn[slice_of[state.symbol]]
        reason = _reason(state, turn == day, turn, today, max_age_days)
        if reason:
            due[state.symbol] = reason
    return due


def due_now(states: list[ProfileState], max_age_days: int, resting: set[str] = frozenset()) -> dict[str, str]:
    """`due_profiles` as of now: the last closed session's turn, less the symbols `resting` after FMP
    answered `[]` for them (asked again after a backoff). The planner and the asset both ask this, so a
    shard planned for its turn is a shard whose run finds the same profiles due."""
    now = trading.now_utc()
    due = due_profiles(states, trading.last_closed_session(now), now.date(), max_age_days)
    return {symbol: why for symbol, why in due.items() if symbol not in resting}


def _reason(state: ProfileState, on_turn: bool, last_turn: dt.date, today: dt.date,
            max_age_days: int) -> str | None:
    if state.fetched_at is None:
        return NEW
    if state.screener_change:
        return f"screener: {state.screener_change}"
    fetched = state.fetched_at.date()
    if (today - fetched).days <= max_age_days:
        return None
    if on_turn:
        return TURN
    # Due on its slice's last turn, yet not fetched: the platform did not run that day.
    return MISSED_TURN if (last_turn - fetched).days > max_age_days else None
