"""The platform's "now": read here and nowhere else.

Which sessions have closed, which quote stands for which bar, whose profile is
due: every such decision asks `now()`. `STOCK_ASSETS_NOW` (an ISO date-time;
without an offset it is New York time) pins it, for the command that reads it
and for every process it starts, since they inherit the environment: worker
processes, `dagster dev` and the daemon's runs, and the built-in simulator. A
test or a rehearsal ("a sync at 11:00 on a Monday after a missed Friday")
moves the clock this way, never the machine's.
"""

from __future__ import annotations

import datetime as dt
import os
from functools import lru_cache
from zoneinfo import ZoneInfo

ENV = "STOCK_ASSETS_NOW"
NEW_YORK = ZoneInfo("America/New_York")


class ClockError(ValueError):
    """STOCK_ASSETS_NOW is set to something that is not a date-time."""


def now() -> dt.datetime:
    """The current instant, aware, in UTC: the pinned one when STOCK_ASSETS_NOW is set."""
    pinned = os.environ.get(ENV, "").strip()
    return parse(pinned) if pinned else dt.datetime.now(dt.timezone.utc)


def is_pinned() -> bool:
    return bool(os.environ.get(ENV, "").strip())


@lru_cache(maxsize=64)
def parse(value: str) -> dt.datetime:
    """An ISO date-time as an aware UTC instant (naive means New York time)."""
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ClockError(f"{ENV}={value!r} is not a date-time: use e.g. 2026-11-30T11:00:00-05:00 "
                         f"(without an offset, New York time), or unset it for the real time.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=NEW_YORK)
    return moment.astimezone(dt.timezone.utc)


def setting(moment: dt.datetime) -> str:
    """The STOCK_ASSETS_NOW value that pins the clock at `moment` (aware)."""
    return moment.astimezone(dt.timezone.utc).isoformat()
