"""Partitions: trading days for daily assets, symbol shards for per-symbol assets.

Trading days are weekday windows in New York time. Each window opens at 17:00
ET, an hour after the close, so a session's partition appears once its bars
exist. Holidays stay in the set: they materialize empty and say "market closed",
which keeps the partition grid a plain weekday grid users can read.

Symbol shards are a pure function of the symbol: its first letter, and for the
crowded letters a stable hash bucket. A symbol never moves when the universe
grows or shrinks, and no shard of the US universe holds much over 1,000 symbols.
"""

from __future__ import annotations

import datetime as dt
import string
import zlib
from collections.abc import Sequence

import dagster as dg

DEFAULT_TRADING_DAYS_START = "2025-01-02"

# Buckets per first letter, sized from the first-letter mix of US tickers so
# that ~19,000 symbols give shards of a few hundred, none over ~1,000.
_BUCKETS_BY_LETTER = {letter: 1 for letter in string.ascii_uppercase}
_BUCKETS_BY_LETTER.update({"A": 2, "B": 2, "C": 2, "F": 2, "G": 2, "I": 2, "M": 2, "N": 2,
                           "P": 2, "S": 3, "T": 2})
OTHER_SHARD = "0-9"


def _shard_keys() -> list[str]:
    keys = []
    for letter, buckets in _BUCKETS_BY_LETTER.items():
        keys += [letter] if buckets == 1 else [f"{letter}{i}" for i in range(1, buckets + 1)]
    return keys + [OTHER_SHARD]


SHARD_KEYS: list[str] = _shard_keys()


def shard_of(symbol: str) -> str:
    """The shard a symbol lives in; depends on nothing but the symbol."""
    first = symbol[:1].upper()
    buckets = _BUCKETS_BY_LETTER.get(first)
    if buckets is None:
        return OTHER_SHARD
    if buckets == 1:
        return first
    return f"{first}{zlib.crc32(symbol.upper().encode()) % buckets + 1}"


def trading_days_from(start: dt.date) -> dg.TimeWindowPartitionsDefinition:
    """The trading-day partitions from `start` (STOCK_ASSETS_START) to the latest closed session."""
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule="0 17 * * 1-5",
        fmt="%Y-%m-%d",
        start=start.isoformat(),
        timezone="America/New_York",
        end_offset=1,  # the window opened at 17:00 ET holds today's closed session
    )


# The assets are declared on the default start; `assets.assets_for(config)`
# moves them to the configured one when the definitions are built.
trading_days = trading_days_from(dt.date.fromisoformat(DEFAULT_TRADING_DAYS_START))

symbol_shards = dg.StaticPartitionsDefinition(SHARD_KEYS)


def shard_range(first: str, last: str) -> list[str]:
    """The shards from `first` to `last`, in the partitions' order: what a run of that range covers."""
    return SHARD_KEYS[SHARD_KEYS.index(first):SHARD_KEYS.index(last) + 1]


def partition_label(keys: Sequence[str]) -> str | None:
    """A run's partition, or its range of them as Dagster writes one ("A1...F2")."""
    if not keys:
        return None
    return keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"


def latest_session_day(now: dt.datetime | None = None) -> dt.date:
    """The newest closed session that has its partition: the day a sync fetches.

    Between a session's close (16:00 ET, 13:00 on half days) and 17:00 its window
    has not opened, so there is no partition for it yet: the session before it.
    """
    from stock_assets import trading

    now = now or trading.now_utc()
    day = trading.last_closed_session(now)
    newest = dt.date.fromisoformat(trading_days.get_partition_keys(current_time=now)[-1])
    if day > newest:
        day = trading.calendar().previous_session(day.isoformat()).date()
    return day
