"""`splits`: the day's splits from the splits calendar, so stored histories can be restated.

FMP serves every price history adjusted for the splits up to the day of the
call; the warehouse loads a history once and then appends. A split after a
symbol's load leaves its stored bars in the old shares: `market.splits` is
what tells `price_history` and `dividend_history` to fetch that symbol again
(`WarehouseResource.symbols_needing_restatement`).

One call a day (from = to = the day). The first time, the calendar is filled
back to the start of the price history in windows of `WINDOW_DAYS`, and after
a gap (days not synced) the missing days are fetched the same way.
"""

import datetime as dt

import dagster as dg

from stock_assets.defs import checks as checks_mod
from stock_assets.defs.assets.common import FMP_POOL, ensure_closed
from stock_assets.defs.assets.materialization import Materialization
from stock_assets.defs.assets.prices import history_start
from stock_assets.defs.assets.universe import symbols
from stock_assets.fmp import FMPResource
from stock_assets.defs.resources import SyncSettings
from stock_assets.warehouse import WarehouseResource, column_schema

ENDPOINT = "splits-calendar"
# FMP lists some splits a day or more after their ex-date: each run asks again this many days
# back (in the same call as the day: splits are a few a day worldwide).
RECHECK_DAYS = 10
# Days per call when filling the past: a few hundred splits worldwide a month,
# far under the 4,000-row cap FMP's calendars have shown.
WINDOW_DAYS = 30


def splits_asset(trading_days: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """`splits` on the configured trading days (they start at STOCK_ASSETS_START)."""
    return dg.asset(
        name="splits", group_name="corporate_actions", partitions_def=trading_days, deps=[symbols],
        pool=FMP_POOL, kinds={"duckdb"}, metadata={"dagster/column_schema": column_schema("splits")},
        check_specs=checks_mod.specs("splits", trading_days, checks_mod.NO_DUPLICATES),
        description="Splits whose ex-date is this day, for symbols in the universe: market.splits "
                    "(the first run fills the past back to the price history's start).",
    )(splits)


def splits(context: dg.AssetExecutionContext, fmp: FMPResource, warehouse: WarehouseResource,
           settings: SyncSettings) -> dg.MaterializeResult:
    day = ensure_closed(context)
    with Materialization(context, fmp, warehouse, settings) as m:
        m.stats.route = ENDPOINT
        with m.stats.phase("plan"):
            universe = warehouse.universe_symbols()
            if not universe:
                raise dg.Failure("market.symbols is empty: materialize `symbols` first.")
            span, windows = windows_to_fetch(warehouse.calendar_span(ENDPOINT), day,
                                             history_start(settings, day))
        stored = 0
        for start, end in windows:
            with m.stats.phase("fetch") as phase:
                parsed = fmp.splits_calendar(start, end)
                phase.items = phase.succeeded = 1
            rows = [s for s in parsed.records if s.symbol in universe]
            covered = (min(span[0], start), max(span[1], end)) if span and start <= span[1] + dt.timedelta(1) \
                else (start, end)
            stored += m.write(lambda: warehouse.write_splits(rows, covered, rejects=parsed.rejects,
                                                             run_id=m.run_id), 1)
            span = covered
        m.count_items(len(windows))
        m.log(f"{day}: {stored} splits for the universe from {len(windows)} calendar call(s).")
        return m.result([checks_mod.no_duplicates(warehouse, "market.splits")], calendar_calls=len(windows))


def windows_to_fetch(span: tuple[dt.date, dt.date] | None, day: dt.date,
                     first: dt.date) -> tuple[tuple[dt.date, dt.date] | None, list[tuple[dt.date, dt.date]]]:
    """The loaded span and the windows to fetch for `day`: the gap since the last day loaded, or the day,
    with the RECHECK_DAYS before it."""
    if span is None:
        start = first
    else:
        # The gap since the last day loaded, or the day itself again (a re-run), and the days
        # before it, for the splits FMP lists late.
        start = min(span[1] + dt.timedelta(days=1), day) - dt.timedelta(days=RECHECK_DAYS)
        start = max(start, span[0])
    windows = []
    while start <= day:
        end = min(day, start + dt.timedelta(days=WINDOW_DAYS - 1))
        windows.append((start, end))
        start = end + dt.timedelta(days=1)
    return span, windows
