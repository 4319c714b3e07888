"""NYSE sessions: which days trade, when they close, which one closed last.

Holidays and early closes come from `exchange_calendars` (XNYS), so a holiday
costs no API call and a half day is known to close at 13:00.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import exchange_calendars
import pandas as pd

from stock_assets import clock

NEW_YORK = "America/New_York"
CALENDAR_START = "1990-01-01"


class SessionNotClosedError(ValueError):
    """A partition for a session that has not closed yet cannot be fetched."""


@lru_cache(maxsize=1)
def calendar() -> exchange_calendars.ExchangeCalendar:
    return exchange_calendars.get_calendar("XNYS", start=CALENDAR_START)


def is_session(day: dt.date) -> bool:
    cal = calendar()
    if not cal.first_session.date() <= day <= cal.last_session.date():
        raise ValueError(f"{day} is outside the NYSE calendar ({cal.first_session.date()} to "
                         f"{cal.last_session.date()})")
    return bool(cal.is_session(pd.Timestamp(day)))


def session_close(day: dt.date) -> dt.datetime:
    """The session's close as an aware UTC datetime (13:00 ET on half days)."""
    return calendar().session_close(pd.Timestamp(day)).to_pydatetime()


def now_utc() -> dt.datetime:
    """The platform's clock (`clock.now`: STOCK_ASSETS_NOW pins it)."""
    return clock.now()


def last_closed_session(now: dt.datetime | None = None) -> dt.date:
    now = now or now_utc()
    cal = calendar()
    today = pd.Timestamp(now.astimezone(dt.timezone.utc).date())
    candidate = cal.date_to_session(today, direction="previous")
    while cal.session_close(candidate) > pd.Timestamp(now):
        candidate = cal.previous_session(candidate)
    return candidate.date()


def next_open(day: dt.date) -> dt.datetime:
    """The open of the session after `day` (aware UTC)."""
    cal = calendar()
    following = cal.next_session(cal.date_to_session(pd.Timestamp(day), direction="previous"))
    return cal.session_open(following).to_pydatetime()


def quotes_stand_for(day: dt.date, now: dt.datetime | None = None) -> bool:
    """A quote taken `now` stands for `day`'s bar: between that session's close and the next open.

    Before the close a quote is the session so far; from the next open on it is the next
    session's (FMP stamps it with the last trade): neither is `day`'s bar.
    """
    now = now or now_utc()
    return is_session(day) and session_close(day) <= now < next_open(day)


def sessions_back(day: dt.date, count: int) -> dt.date:
    """The session `count` sessions before the session on or before `day` (0: that session)."""
    cal = calendar()
    on_or_before = cal.date_to_session(pd.Timestamp(day), direction="previous")
    return cal.sessions_window(on_or_before, -(count + 1))[0].date()


def session_number(day: dt.date) -> int:
    """The session's position in the calendar since CALENDAR_START (the session on or before a
    non-trading day): a count that turns on schedules can be taken from."""
    return int(calendar().sessions.get_loc(calendar().date_to_session(pd.Timestamp(day), direction="previous")))


def sessions_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """Sessions from start to end, both included."""
    if end < start:
        return []
    return [ts.date() for ts in calendar().sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))]


def ensure_closed(day: dt.date, now: dt.datetime | None = None) -> None:
    now = now or now_utc()
    if is_session(day) and session_close(day) > now:
        raise SessionNotClosedError(
            f"The {day} session has not closed yet (it closes at "
            f"{session_close(day).astimezone(dt.timezone.utc):%H:%M} UTC): its bars do not exist "
            f"before then. Run this partition after the close.")
    if day > now.astimezone(dt.timezone.utc).date():
        raise SessionNotClosedError(f"{day} is in the future: there is nothing to fetch yet.")
