"""What the FMP-fetching assets share besides `Materialization`: their pool, the closed session."""

import datetime as dt

import dagster as dg

from stock_assets import trading

# Every asset that calls FMP is in one pool: the instance caps how many of its
# runs go at once, on top of the shared limiter that caps the calls they make.
FMP_POOL = "fmp"


def ensure_closed(context: dg.AssetExecutionContext) -> dt.date:
    """The partition's trading day, once its session has closed (a clear failure before)."""
    day = dt.date.fromisoformat(context.partition_key)
    try:
        trading.ensure_closed(day)
    except trading.SessionNotClosedError as error:
        raise dg.Failure(str(error)) from None
    return day
