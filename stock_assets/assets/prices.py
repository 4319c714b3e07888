"""`daily_prices` (one session, every symbol) and `price_history` (a shard's full history).

`daily_prices` takes the cheapest route the plan allows for its day:
  1. `eod-bulk` (Ultimate): one call, every symbol, streamed and filtered;
  2. `batch-quote` in batches of ~100, when the day is the latest closed
     session (a quote after the close is that session's bar);
  3. per-symbol `historical-price-eod/full` for that one day.
A 402 on a route moves on to the next one, saying so.
"""


import datetime as dt
from collections.abc import Sequence

import dagster as dg

from stock_assets import checks as checks_mod
from stock_assets import trading
from stock_assets.assets.common import (
    FMP_POOL, FetchConfig, count_items, fetch_and_write, observe, verdict)
from stock_assets.assets.universe import symbols
from stock_assets.fmp import FMPPlanError, FMPResource, get_plan
from stock_assets.fmp.records import Parsed
from stock_assets.partitions import symbol_shards, trading_days
from stock_assets.resources import SyncSettings
from stock_assets.run_stats import RunStats, calls_for
from stock_assets.warehouse import WarehouseResource, prices_table, quotes_as_prices

PRICE_KEY = ("symbol", "date")


def _day(context: dg.AssetExecutionContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


def holiday_result(context: dg.AssetExecutionContext, stats: RunStats, calls_saved: int,
                   checks: Sequence[dg.AssetCheckResult] = ()) -> dg.MaterializeResult:
    """A weekday the market was closed: zero rows, zero calls, and it says so."""
    stats.route = "market closed"
    stats.optimized("holiday skip", considered=1, skipped=1, calls_saved=calls_saved)
    context.log.info(f"{context.partition_key}: the market was closed (NYSE holiday); nothing to fetch.")
    return dg.MaterializeResult(metadata={**stats.metadata(), "market": "closed", "dagster/row_count": 0},
                                check_results=[*checks, checks_mod.item_success(stats, 1.0)])


def ensure_closed(day: dt.date) -> None:
    try:
        trading.ensure_closed(day)
    except trading.SessionNotClosedError as error:
        raise dg.Failure(str(error)) from None


@dg.asset(group_name="prices", partitions_def=trading_days, deps=[symbols], pool=FMP_POOL,
          kinds={"duckdb"},
          check_specs=checks_mod.specs("daily_prices", checks_mod.PRICES_SANE, checks_mod.COVERAGE,
                                       checks_mod.NO_DUPLICATES, checks_mod.ITEM_SUCCESS),
          description="One session's end-of-day bar for every symbol in the universe: market.prices.")
def daily_prices(context: dg.AssetExecutionContext, config: FetchConfig, fmp: FMPResource,
                 warehouse: WarehouseResource, settings: SyncSettings) -> dg.MaterializeResult:
    day = _day(context)
    ensure_closed(day)
    with observe(context, fmp, warehouse) as stats:
        result = _daily_prices(context, config, fmp, warehouse, settings, stats, day)
    return result


def _day_checks(warehouse: WarehouseResource, day: dt.date) -> list[dg.AssetCheckResult]:
    return [checks_mod.prices_sane(warehouse, "date = ?", [day]),
            checks_mod.coverage(warehouse, day, trading.is_session(day)),
            checks_mod.no_duplicates(warehouse, "market.prices")]


def _daily_prices(context, config: FetchConfig, fmp: FMPResource, warehouse: WarehouseResource,
                  settings: SyncSettings, stats: RunStats, day: dt.date) -> dg.MaterializeResult:
    with stats.phase("plan"):
        universe = sorted(warehouse.universe_symbols())
        if not universe:
            raise dg.Failure("market.symbols is empty: materialize `symbols` first.")
        stored = set() if config.refresh else warehouse.stored_price_symbols(day) & set(universe)
        missing = [s for s in universe if s not in stored]
    if not trading.is_session(day):
        return holiday_result(context, stats, calls_for(len(universe), fmp.quote_batch_size),
                              _day_checks(warehouse, day))
    stats.items_skipped = len(stored)
    if stored:
        # Bars already stored (by price_history or an earlier run) cost nothing:
        # saved is what the route would have cost for all minus for the rest.
        cost = _route_cost(_routes(fmp, day)[0], fmp.quote_batch_size)
        stats.optimized("staleness filter", len(universe), len(stored), cost(len(universe)) - cost(len(missing)))
    if missing:
        _fetch_day(context, fmp, warehouse, stats, day, missing, len(universe))
    else:
        stats.route = "already stored"
    context.log.info(f"{day}: {stats.rows_written} bars written via {stats.route}, "
                     f"{len(stored)} already stored, {stats.api_calls} API calls.")
    return verdict(context, stats, settings, _day_checks(warehouse, day))


def _routes(fmp: FMPResource, day: dt.date) -> list[str]:
    routes = []
    if get_plan(fmp.plan).serves("eod-bulk"):
        routes.append("eod-bulk")
    if day == trading.last_closed_session():
        routes.append("batch-quote")
    return routes + ["historical-price-eod/full"]


def _route_cost(route: str, batch_size: int):
    """Calls a route makes for n symbols."""
    if route == "eod-bulk":
        return lambda n: 1 if n else 0
    if route == "batch-quote":
        return lambda n: calls_for(n, batch_size)
    return lambda n: n


def _fetch_day(context, fmp: FMPResource, warehouse: WarehouseResource, stats: RunStats,
               day: dt.date, missing: list[str], universe_size: int) -> None:
    for route in _routes(fmp, day):
        try:
            if route == "eod-bulk":
                _via_bulk(context, fmp, warehouse, stats, day, missing)
            elif route == "batch-quote":
                _via_quotes(context, fmp, warehouse, stats, day, missing)
            else:
                _via_history(context, fmp, warehouse, stats, day, missing)
            stats.route = route
            return
        except FMPPlanError as error:
            note = f"{route} is not in the plan (402); falling back to the next cheaper route"
            stats.notes.append(note)
            context.log.warning(f"{note}: {error}")


def _via_bulk(context, fmp, warehouse, stats, day, missing) -> None:
    wanted = set(missing)
    with stats.phase("fetch") as phase:
        parsed = fmp.eod_bulk(day, keep=wanted.__contains__)
        phase.items = phase.succeeded = len(parsed.records)
    with stats.phase("write") as phase:
        with warehouse.write() as conn:
            warehouse.upsert(conn, "market.prices", prices_table(parsed.records, "eod-bulk"), PRICE_KEY)
            if parsed.rejects:
                warehouse.record_rejects(parsed.rejects, context.run.run_id, conn=conn)
        phase.items = phase.succeeded = len(parsed.records)
    stats.rows_written += len(parsed.records)
    stats.rejects += len(parsed.rejects)
    count_items(stats, len(missing), [])
    _note_no_bar(stats, missing, {bar.symbol for bar in parsed.records})
    stats.optimized("bulk EOD", len(missing), len(missing), len(missing) - 1)


def _via_quotes(context, fmp, warehouse, stats, day, missing) -> None:
    close = trading.session_close(day)
    size = fmp.quote_batch_size
    batches = [tuple(missing[i:i + size]) for i in range(0, len(missing), size)]
    got: set[str] = set()

    def fetch(batch: Sequence[str]) -> Parsed:
        parsed = fmp.batch_quotes(batch)
        # A quote stands for the session's bar only if it was taken after the close.
        parsed.records = [q for q in parsed.records if q.timestamp >= close]
        got.update(q.symbol for q in parsed.records)
        return parsed

    def write(conn, results) -> int:
        table = quotes_as_prices([q for _, parsed in results for q in parsed.records], day)
        warehouse.upsert(conn, "market.prices", table, PRICE_KEY)
        return table.num_rows

    # A 402 stops the fetch (it would answer every batch alike) and reaches
    # _fetch_day, which takes the next route.
    summary = fetch_and_write(context, fmp, warehouse, stats, batches, fetch, write,
                              label=f"batch-quote {day}", weight=len)
    # Count symbols, not batches, so that shares mean the same on every route.
    count_items(stats, len(missing), [s for f in summary.failures for s in f.item])
    _note_no_bar(stats, missing, got)
    stats.optimized("batched quotes", len(missing), len(missing), len(missing) - len(batches))


def _via_history(context, fmp, warehouse, stats, day, missing) -> None:
    def write(conn, results) -> int:
        bars = [bar for _, parsed in results for bar in parsed.records]
        warehouse.upsert(conn, "market.prices", prices_table(bars, "historical-price-eod/full"), PRICE_KEY)
        return len(bars)

    summary = fetch_and_write(context, fmp, warehouse, stats, missing,
                              lambda symbol: fmp.historical_prices(symbol, day, day), write,
                              label=f"daily prices {day}")
    count_items(stats, summary.total, [f.item for f in summary.failures])


def _note_no_bar(stats: RunStats, asked: list[str], got: set[str]) -> None:
    """Symbols FMP had no bar for (halted, not yet trading) were answered, not failed."""
    no_bar = sum(1 for s in asked if s not in got)
    if no_bar:
        stats.notes.append(f"{no_bar} symbols had no bar for the day")


@dg.asset(group_name="prices", partitions_def=symbol_shards, deps=[symbols], pool=FMP_POOL,
          kinds={"duckdb"},
          check_specs=checks_mod.specs("price_history", checks_mod.PRICES_SANE, checks_mod.ITEM_SUCCESS),
          description="Full price history from the configured start for the shard's symbols "
                      "not yet covered: market.prices.")
def price_history(context: dg.AssetExecutionContext, config: FetchConfig, fmp: FMPResource,
                  warehouse: WarehouseResource, settings: SyncSettings) -> dg.MaterializeResult:
    with observe(context, fmp, warehouse) as stats:
        result = _price_history(context, config, fmp, warehouse, settings, stats)
    return result


def _price_history(context, config: FetchConfig, fmp: FMPResource, warehouse: WarehouseResource,
                   settings: SyncSettings, stats: RunStats) -> dg.MaterializeResult:
    end = trading.last_closed_session()
    start = history_start(settings, end)
    with stats.phase("plan"):
        shard_symbols = sorted(warehouse.universe_symbols(shard=context.partition_key))
        todo = shard_symbols if config.refresh else warehouse.symbols_needing_history(
            "prices", shard_symbols, start)
    covered = len(shard_symbols) - len(todo)
    stats.items_skipped = covered
    stats.route = "historical-price-eod/full"
    if covered:
        years = max(1.0, (end - start).days / 365.25)
        stats.optimized("staleness filter", len(shard_symbols), covered,
                        covered * calls_for(round(years * 252), 5000))

    def write(conn, results) -> int:
        bars = [bar for _, parsed in results for bar in parsed.records]
        warehouse.upsert(conn, "market.prices", prices_table(bars, "historical-price-eod/full"), PRICE_KEY)
        warehouse.mark_history_loaded("prices", [s for s, _ in results], start, end, conn=conn)
        return len(bars)

    summary = fetch_and_write(context, fmp, warehouse, stats, todo,
                              lambda symbol: fmp.price_history(symbol, start, end), write,
                              label=f"price history {context.partition_key}")
    count_items(stats, summary.total, [f.item for f in summary.failures])
    sane = checks_mod.prices_sane(
        warehouse, "symbol IN (SELECT symbol FROM market.symbols WHERE shard = ?)", [context.partition_key])
    return verdict(context, stats, settings, [sane])


def history_start(settings: SyncSettings, end: dt.date) -> dt.date:
    if settings.history_start:
        return dt.date.fromisoformat(settings.history_start)
    return end - dt.timedelta(days=round(365.25 * settings.history_years))
