"""`dividends` (one ex-date, all symbols) and `dividend_history` (a shard's payers)."""

import datetime as dt

import dagster as dg

from stock_assets.defs import checks as checks_mod
from stock_assets import trading
from stock_assets.defs.assets.common import FMP_POOL, ensure_closed
from stock_assets.defs.assets.materialization import Fetched, Materialization
from stock_assets.defs.assets.universe import symbols
from stock_assets.fmp import FMPResource
from stock_assets.defs.partitions import symbol_shards
from stock_assets.defs.resources import SyncSettings
from stock_assets.warehouse import WarehouseResource, column_schema


def dividends_asset(trading_days: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """`dividends` on the configured trading days (they start at STOCK_ASSETS_START)."""
    return dg.asset(
        name="dividends", group_name="dividends", partitions_def=trading_days, deps=[symbols], pool=FMP_POOL,
        kinds={"duckdb"}, metadata={"dagster/column_schema": column_schema("dividends")},
        check_specs=checks_mod.specs("dividends", trading_days, checks_mod.NO_DUPLICATES, checks_mod.ITEM_SUCCESS),
        description="Dividends whose ex-date is this day, from the one-day dividend calendar, "
                    "for symbols in the universe: market.dividends.",
    )(dividends)


def dividends(context: dg.AssetExecutionContext, fmp: FMPResource, warehouse: WarehouseResource,
              settings: SyncSettings) -> dg.MaterializeResult:
    day = ensure_closed(context)
    with Materialization(context, fmp, warehouse, settings) as m:
        with m.stats.phase("plan"):
            universe = warehouse.universe_symbols()
            payers = warehouse.payer_symbols()
        if not universe:
            raise dg.Failure("market.symbols is empty: materialize `symbols` first.")
        if not trading.is_session(day):
            return m.market_closed(1, [checks_mod.no_duplicates(warehouse, "market.dividends", day)])
        m.stats.route = "dividends-calendar"
        rows = calendar_days(m, day, day, universe)
        # The sessions before it again, in one call: FMP adds dividends to its calendar after their
        # ex-date and amends amounts.
        since = trading.sessions_back(day, RECHECK_SESSIONS)
        rows_again = calendar_days(m, since, day - dt.timedelta(days=1), universe)
        m.count_items(rows)
        calls = m.stats.api_calls
        m.stats.optimized("dividend calendar", len(payers), len(payers), max(0, len(payers) - calls))
        m.log(f"{day}: {rows} dividends for the universe from the day's calendar; {rows_again} of the "
              f"{RECHECK_SESSIONS} sessions before it read again for late additions ({calls} calls).")
        return m.result([checks_mod.no_duplicates(warehouse, "market.dividends", day)])


# Sessions before the partition's day whose calendar is read again: FMP lists some dividends late.
RECHECK_SESSIONS = 3


def calendar_days(m: Materialization, first: dt.date, last: dt.date, universe: set[str]) -> int:
    """The ex-dates from `first` to `last` for the universe, in one calendar call; a window that comes
    back at FMP's row cap (it drops the oldest rows) is asked again a day a call. The rows written."""
    with m.stats.phase("fetch") as phase:
        parsed = m.fmp.dividends_calendar(first, last)
        phase.items = phase.succeeded = len(parsed.records)
    if parsed.at_cap and first < last:
        return sum(calendar_days(m, day, day, universe) for day in trading.sessions_between(first, last))
    if parsed.at_cap:
        # One day cannot be split further: a capped answer may have lost rows.
        raise dg.Failure(f"dividends-calendar returned its row cap for {first}: rows may be missing, "
                         f"so nothing was stored. Load the affected payers with dividend_history.",
                         metadata=m.stats.metadata())
    rejects = [r for r in parsed.rejects if r.key in universe]
    m.stats.rejects += len(rejects)
    written = 0
    for day in trading.sessions_between(first, last):
        rows = [d for d in parsed.records if d.symbol in universe and d.ex_date == day]
        written += m.write(lambda: m.warehouse.write_calendar_day(day, rows, rejects=rejects, run_id=m.run_id),
                           len(rows))
        rejects = []  # stored once, with the first day's rows
    return written


@dg.asset(group_name="dividends", partitions_def=symbol_shards, deps=[symbols], pool=FMP_POOL,
          kinds={"duckdb"}, metadata={"dagster/column_schema": column_schema("dividends")},
          check_specs=checks_mod.specs("dividend_history", symbol_shards, checks_mod.ITEM_SUCCESS),
          description="Full dividend history of the shard's dividend payers not yet loaded: "
                      "market.dividends.")
def dividend_history(context: dg.AssetExecutionContext, fmp: FMPResource, warehouse: WarehouseResource,
                     settings: SyncSettings) -> dg.MaterializeResult:
    with Materialization(context, fmp, warehouse, settings) as m:
        m.stats.route = "dividends"
        end = trading.last_closed_session()
        with m.stats.phase("plan"):
            shard_symbols = warehouse.universe_symbols(m.shards)
            payers = sorted(warehouse.payer_symbols(m.shards))
            todo = payers if settings.refresh else warehouse.symbols_needing_history("dividends", payers, None)
            restate = warehouse.symbols_needing_restatement("dividends", sorted(shard_symbols))
            todo = list(dict.fromkeys(todo + restate))
        m.restating(restate)
        non_payers = len(shard_symbols) - len(payers)
        if non_payers:
            # The screener's lastAnnualDividend of 0 says who pays nothing (and the calendar, daily,
            # who starts): they cost no call.
            m.stats.optimized("dividend filter", len(shard_symbols), non_payers, non_payers)
        loaded = len(payers) - len(todo)
        if loaded:
            m.stats.optimized("staleness filter", len(payers), loaded, loaded)
        m.stats.items_skipped = non_payers + loaded

        def write(fetched: Fetched) -> int:
            # A full history replaces what the symbol held (amended, reclassified, withdrawn events);
            # an empty answer replaces nothing.
            answered = {d.symbol for d in fetched.records}
            return warehouse.write_dividend_history(fetched.items, end, fetched.records,
                                                    rejects=fetched.rejects, run_id=m.run_id,
                                                    restated=[s for s in fetched.items if s in answered])

        summary = m.fetch_and_write(todo, fmp.dividends, write)
        m.count_items(summary.total, [f.item for f in summary.failures])
        return m.result()
