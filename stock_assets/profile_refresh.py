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
- its slice of the universe has its turn: the universe, in shard order, is cut
  into one slice per session of the refresh cycle, and each session refreshes
  one slice. A slice touches two or three shards, so an ordinary day plans two
  or three shard runs instead of one per shard, at the same number of calls;
- or its turn was missed (the platform did not run that day): its full profile
  is then older than `profile_max_age_days` and the few days of slack the
  holidays inside a cycle need.

Measured (bench/bench_sync.py, 19,205 symbols, Premium): a per-symbol slot on a
7-day cycle made 2,809 profile calls a day and planned a run in every one of the
39 shards; a 30-day cycle of slices makes ~960 in two or three shard runs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from stock_assets import trading
from stock_assets.partitions import SHARD_KEYS
from stock_assets.warehouse import ProfileState

NEW = "new symbol"
# A cycle is 20 sessions for 30 days, four weeks; the holidays inside one push a turn up to
# three days further (measured over 2025-2026's NYSE calendar: 33 days at most).
HOLIDAY_SLACK_DAYS = 3
TURN = "refresh turn"


def cycle_sessions(max_age_days: int) -> int:
    """Sessions in one refresh cycle: those of the whole weeks within `max_age_days` (20 for 30
    days), so a full profile is `max_age_days` old at most at its turn, plus the days a holiday
    inside the cycle adds."""
    return max(1, (max_age_days - 1) * 5 // 7)


def todays_slice(states: Iterable[ProfileState], day: dt.date, max_age_days: int) -> set[str]:
    """The symbols whose turn is the session `day`: the universe in shard order, cut in equal slices."""
    order = {shard: i for i, shard in enumerate(SHARD_KEYS)}
    symbols = sorted(((order.get(s.shard, len(order)), s.symbol) for s in states))
    cycle = cycle_sessions(max_age_days)
    turn = trading.session_number(day) % cycle
    lo, hi = turn * len(symbols) // cycle, (turn + 1) * len(symbols) // cycle
    return {symbol for _, symbol in symbols[lo:hi]}


def due_profiles(states: list[ProfileState], day: dt.date, today: dt.date,
                 max_age_days: int) -> dict[str, str]:
    """Symbol -> why its full profile is due on the session `day` (UTC date `today`)."""
    turn = todays_slice(states, day, max_age_days)
    due = {}
    for state in states:
        reason = _reason(state, state.symbol in turn, today, max_age_days)
        if reason:
            due[state.symbol] = reason
    return due


def _reason(state: ProfileState, on_turn: bool, today: dt.date, max_age_days: int) -> str | None:
    if state.fetched_at is None:
        return NEW
    if state.screener_change:
        return f"screener: {state.screener_change}"
    age = (today - state.fetched_at.date()).days
    if on_turn and age >= 1:
        return TURN
    if age >= max_age_days + HOLIDAY_SLACK_DAYS:
        return f"older than {max_age_days} days and its turn missed"
    return None
