"""`dividends` (one ex-date, all symbols) and `dividend_history` (a shard's payers)."""


import dagster as dg

import datetime as dt

from stock_assets import checks as checks_mod
from stock_assets import trading
from stock_assets.assets.common import (
    FMP_POOL, FetchConfig, count_items, fetch_and_write, observe, verdict)
from stock_assets.assets.prices import _day, ensure_closed, holiday_result
from stock_assets.assets.universe import symbols
from stock_assets.fmp import FMPResource
from stock_assets.partitions import symbol_shards, trading_days
from stock_assets.resources import SyncSettings
from stock_assets.run_stats import RunStats
from stock_assets.warehouse import WarehouseResource, dividends_table

DIVIDEND_KEY = ("symbol", "ex_date")


@dg.asset(group_name="dividends", partitions_def=trading_days, deps=[symbols], pool=FMP_POOL,
          kinds={"duckdb"},
          check_specs=checks_mod.specs("dividends", checks_mod.NO_DUPLICATES, checks_mod.ITEM_SUCCESS),
          description="Dividends whose ex-date is this day, from the one-day dividend calendar, "
                      "for symbols in the universe: market.dividends.")
def dividends(context: dg.AssetExecutionContext, config: FetchConfig, fmp: FMPResource,
              warehouse: WarehouseResource, settings: SyncSettings) -> dg.MaterializeResult:
    day = _day(context)
    ensure_closed(day)
    with observe(context, fmp, warehouse) as stats:
        result = _dividends(context, fmp, warehouse, settings, stats, day)
    return result


def _dividends(context, fmp: FMPResource, warehouse: WarehouseResource, settings: SyncSettings,
               stats: RunStats, day: dt.date) -> dg.MaterializeResult:
    with stats.phase("plan"):
        universe = warehouse.universe_symbols()
        payers = warehouse.payer_symbols()
    if not universe:
        raise dg.Failure("market.symbols is empty: materialize `symbols` first.")
    if not trading.is_session(day):
        return holiday_result(context, stats, 1, [checks_mod.no_duplicates(warehouse, "market.dividends")])
    stats.route = "dividends-calendar"
    with stats.phase("fetch") as phase:
        parsed = fmp.dividends_calendar(day, day)
        phase.items = phase.succeeded = len(parsed.records)
    if parsed.at_cap:
        # One day cannot be split further: a capped answer may have lost rows.
        raise dg.Failure(f"dividends-calendar returned its row cap for {day}: rows may be missing, "
                         f"so nothing was stored. Load the affected payers with dividend_history.",
                         metadata=stats.metadata())
    rows = [d for d in parsed.records if d.symbol in universe and d.ex_date == day]
    with stats.phase("write") as phase:
        with warehouse.write() as conn:
            warehouse.upsert(conn, "market.dividends", dividends_table(rows, "dividends-calendar"),
                             DIVIDEND_KEY)
            rejects = [r for r in parsed.rejects if r.key in universe]
            if rejects:
                warehouse.record_rejects(rejects, context.run.run_id, conn=conn)
        phase.items = phase.succeeded = len(rows)
    stats.rows_written, stats.rejects = len(rows), len(rejects)
    count_items(stats, len(rows), [])
    stats.optimized("dividend calendar", len(payers), len(payers), max(0, len(payers) - 1))
    context.log.info(f"{day}: {len(rows)} dividends for the universe "
                     f"(of {len(parsed.records)} worldwide) from one calendar call.")
    return verdict(context, stats, settings, [checks_mod.no_duplicates(warehouse, "market.dividends")])


@dg.asset(group_name="dividends", partitions_def=symbol_shards, deps=[symbols], pool=FMP_POOL,
          kinds={"duckdb"},
          check_specs=checks_mod.specs("dividend_history", checks_mod.ITEM_SUCCESS),
          description="Full dividend history of the shard's dividend payers not yet loaded: "
                      "market.dividends.")
def dividend_history(context: dg.AssetExecutionContext, config: FetchConfig, fmp: FMPResource,
                     warehouse: WarehouseResource, settings: SyncSettings) -> dg.MaterializeResult:
    with observe(context, fmp, warehouse) as stats:
        result = _dividend_history(context, config, fmp, warehouse, settings, stats)
    return result


def _dividend_history(context, config: FetchConfig, fmp: FMPResource, warehouse: WarehouseResource,
                      settings: SyncSettings, stats: RunStats) -> dg.MaterializeResult:
    stats.route = "dividends"
    end = trading.last_closed_session()
    with stats.phase("plan"):
        shard_symbols = warehouse.universe_symbols(shard=context.partition_key)
        payers = sorted(warehouse.payer_symbols(shard=context.partition_key))
        todo = payers if config.refresh else warehouse.symbols_needing_history("dividends", payers, None)
    non_payers = len(shard_symbols) - len(payers)
    if non_payers:
        # The screener's lastAnnualDividend tells who pays: the others cost no call.
        stats.optimized("dividend filter", len(shard_symbols), non_payers, non_payers)
    loaded = len(payers) - len(todo)
    if loaded:
        stats.optimized("staleness filter", len(payers), loaded, loaded)
    stats.items_skipped = non_payers + loaded

    def write(conn, results) -> int:
        rows = [d for _, parsed in results for d in parsed.records]
        warehouse.upsert(conn, "market.dividends", dividends_table(rows, "dividends"), DIVIDEND_KEY)
        warehouse.mark_history_loaded("dividends", [s for s, _ in results], None, end, conn=conn)
        return len(rows)

    summary = fetch_and_write(context, fmp, warehouse, stats, todo, fmp.dividends, write,
                              label=f"dividend history {context.partition_key}")
    count_items(stats, summary.total, [f.item for f in summary.failures])
    return verdict(context, stats, settings)
