"""When stored bars are read again from FMP's official end-of-day data, so that revisions reach them.

FMP corrects recent bars days after the fact (volume most often, prices at times), and a bar taken
from a quote after the close is provisional: the closing auction and the consolidated volume can
differ from the official end-of-day bar. Each stored bar says where it came from (`source`); the
official answer replaces what differs, and each difference is counted (`revisions_repaired`).

- With `eod-bulk` (Ultimate), the latest session's `daily_prices` reads again the sessions
  RECHECK_LAGS before it: one bulk call each, so every session is read again two sessions after
  it and five after it, and a revision FMP makes within five sessions of its bar is stored at
  most five sessions after the bar (two calls a day; the bulk throttle allows two a minute).
- Without it, the symbols on today's profile refresh turn (`profile_refresh`: one slice of the
  universe a session, each symbol once a cycle) fetch their last cycle of history in
  `price_history`, in the shard runs their profiles already need: one call a symbol a cycle (~800
  a day for 19,205 symbols on Premium). A symbol holding a quote-derived bar older than a cycle (it
  missed its turn) is due at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from stock_assets import trading
from stock_assets.profile_refresh import cycle_sessions, todays_slice
from stock_assets.warehouse import WarehouseResource

RECHECK_LAGS = (2, 5)


def recheck_days(day: dt.date) -> list[dt.date]:
    """The sessions before `day` whose bulk bars the latest session's run reads again."""
    return [trading.sessions_back(day, lag) for lag in RECHECK_LAGS]


def confirm_from(day: dt.date, max_age_days: int) -> dt.date:
    """The first session a confirmation reads: a cycle back, and the longest recheck lag before it."""
    return trading.sessions_back(day, cycle_sessions(max_age_days) + max(RECHECK_LAGS))


def confirmations_due(warehouse: WarehouseResource, symbols: Iterable[str], day: dt.date, max_age_days: int,
                      on_turn: bool) -> list[str]:
    """Of `symbols`, those whose recent bars are read again from their history today: on their refresh
    turn (`on_turn`: the plan has no bulk file to re-read), or holding an overdue quote-derived bar."""
    symbols = set(symbols)
    due = warehouse.symbols_with_quote_bars(symbols, before=trading.sessions_back(day, cycle_sessions(max_age_days)))
    if on_turn:
        due |= todays_slice(warehouse.profile_states(), day, max_age_days) & symbols
    return sorted(due)


def shards_to_confirm(warehouse: WarehouseResource, day: dt.date, max_age_days: int, on_turn: bool) -> set[str]:
    """The shards that have confirmations due (the planner's view of `confirmations_due`)."""
    shards = warehouse.shards_with_quote_bars(trading.sessions_back(day, cycle_sessions(max_age_days)))
    if on_turn:
        states = warehouse.profile_states()
        turn = todays_slice(states, day, max_age_days)
        shards |= {state.shard for state in states if state.symbol in turn}
    return shards
