"""NYSE sessions (from ``exchange_calendars``' XNYS) and the simulator's clock."""

from __future__ import annotations

import functools
from datetime import date, datetime, time, timedelta
from typing import Callable
from zoneinfo import ZoneInfo

import numpy as np

ET = ZoneInfo("America/New_York")

NowSpec = datetime | date | Callable[[], datetime] | None


def resolve_now(now: NowSpec) -> datetime:
    """The simulator's "now" as an aware datetime in America/New_York."""
    if now is None:
        value: datetime | date = datetime.now(ET)
    elif callable(now):
        value = now()
    else:
        value = now
    if not isinstance(value, datetime):  # a bare date: the evening of that day
        value = datetime.combine(value, time(20, 0))
    if value.tzinfo is None:
        value = value.replace(tzinfo=ET)
    return value.astimezone(ET)


@functools.lru_cache(maxsize=8)
def get_sessions(start: date, end: date) -> "Sessions":
    return Sessions(start, end)


class Sessions:
    """Every XNYS session in [start, end], as index-addressable arrays."""

    def __init__(self, start: date, end: date):
        import warnings

        import exchange_calendars as xc

        # Pass an explicit start: the calendar's default starts ~20 years back.
        # (exchange_calendars 4.13 trips a pandas deprecation warning internally.)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                from pandas.errors import Pandas4Warning

                warnings.simplefilter("ignore", Pandas4Warning)
            except ImportError:  # pragma: no cover - older pandas
                pass
            cal = xc.get_calendar("XNYS", start=start.isoformat(), end=end.isoformat())
        sess = cal.sessions
        self.start = start
        self.end = end
        self.ords = np.array([d.toordinal() for d in sess.date], dtype=np.int64)
        self.n = len(self.ords)
        import pandas as pd

        closes = pd.DatetimeIndex(cal.closes).asi8
        opens = pd.DatetimeIndex(cal.opens).asi8
        self.close_ts = closes / 1e9  # unix seconds
        self.open_ts = opens / 1e9
        self.iso = [date.fromordinal(int(o)).isoformat() for o in self.ords]
        # first session index on or after each calendar day from ords[0]
        self.day0 = int(self.ords[0])
        days = np.arange(self.day0, int(self.ords[-1]) + 1, dtype=np.int64)
        self._on_or_after = np.searchsorted(self.ords, days, side="left")

    # -- lookups --------------------------------------------------------
    def date(self, i: int) -> date:
        return date.fromordinal(int(self.ords[i]))

    def on_or_before(self, d: date) -> int:
        """Index of the last session <= d (-1 when none)."""
        return int(np.searchsorted(self.ords, d.toordinal(), side="right")) - 1

    def on_or_after(self, d: date) -> int:
        """Index of the first session >= d (n when none)."""
        return int(np.searchsorted(self.ords, d.toordinal(), side="left"))

    def index_of(self, d: date) -> int | None:
        i = self.on_or_after(d)
        if i < self.n and self.ords[i] == d.toordinal():
            return i
        return None

    def first_on_or_after_ords(self, ords: np.ndarray) -> np.ndarray:
        """Vectorised: first session index on or after each ordinal (n past the end)."""
        off = ords - self.day0
        out = np.full(off.shape, self.n, dtype=np.int64)
        ok = (off >= 0) & (off < len(self._on_or_after))
        out[ok] = self._on_or_after[off[ok]]
        out[off < 0] = 0
        return out

    def last_closed(self, now: datetime) -> int:
        """Index of the latest session whose close is at or before ``now``."""
        return int(np.searchsorted(self.close_ts, now.timestamp(), side="right")) - 1

    def in_session(self, now: datetime) -> int | None:
        """Index of the session in progress at ``now`` (open <= now < close), else None."""
        ts = now.timestamp()
        i = int(np.searchsorted(self.open_ts, ts, side="right")) - 1
        if 0 <= i < self.n and ts < self.close_ts[i]:
            return i
        return None


def calendar_end_for(now: datetime) -> date:
    return max(now.date(), date.today()) + timedelta(days=400)
