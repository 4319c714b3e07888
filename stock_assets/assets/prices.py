"""`daily_prices` (one session, every symbol) and `price_history` (a shard's full history).

`daily_prices` takes the cheapest route the plan allows for its day:
  1. `eod-bulk` (Ultimate): one call, every symbol, streamed and filtered;
  2. `batch-quote` in batches of ~100, when the day is the latest closed
     session (a quote after the close is that session's bar);
  3. per-symbol `historical-price-eod/full` for that one day.
A 402 on a route moves on to the next one, saying so.
"""

import datetime as dt
from collections.abc import Callable, Sequence

import dagster as dg

from stock_assets import checks as checks_mod
from stock_assets import trading
from stock_assets.assets.common import FMP_POOL, ensure_closed
from stock_assets.assets.materialization import Fetched, Materialization
from stock_assets.assets.universe import symbols
from stock_assets.fmp import FMPPlanError, FMPResource, Parsed, get_plan
from stock_assets.partitions import symbol_shards
from stock_assets.resources import SyncSettings
from stock_assets.run_stats import calls_for
from stock_assets.warehouse import WarehouseResource, column_schema


def daily_prices_asset(trading_days: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """`daily_prices` on the configured trading days (they start at STOCK_ASSETS_START)."""
    return dg.asset(
        name="daily_prices", group_name="prices", partitions_def=trading_days, deps=[symbols], pool=FMP_POOL,
        kinds={"duckdb"}, metadata={"dagster/column_schema": column_schema("prices")},
        check_specs=checks_mod.specs("daily_prices", trading_days, checks_mod.PRICES_SANE, checks_mod.COVERAGE,
                                     checks_mod.NO_DUPLICATES, checks_mod.ITEM_SUCCESS),
        description="One session's end-of-day bar for every symbol in the universe: market.prices.",
    )(daily_prices)


def daily_prices(context: dg.AssetExecutionContext, fmp: FMPResource, warehouse: WarehouseResource,
                 settings: SyncSettings) -> dg.MaterializeResult:
    day = ensure_closed(context)
    with Materialization(context, fmp, warehouse, settings) as m:
        with m.stats.phase("plan"):
            universe = sorted(warehouse.universe_symbols())
            if not universe:
                raise dg.Failure("market.symbols is empty: materialize `symbols` first.")
            stored = set() if settings.refresh else warehouse.stored_price_symbols(day) & set(universe)
            missing = [s for s in universe if s not in stored]
        if not trading.is_session(day):
            return m.market_closed(calls_for(len(universe), fmp.quote_batch_size), day_checks(warehouse, day))
        m.stats.items_skipped = len(stored)
        if stored:
            # Bars already stored (by price_history or an earlier run) cost nothing:
            # saved is what the route would have cost for all minus for the rest.
            cost = route_cost(routes(fmp, day)[0], fmp.quote_batch_size)
            m.stats.optimized("staleness filter", len(universe), len(stored),
                              cost(len(universe)) - cost(len(missing)))
        if missing:
            fetch_day(m, missing)
        else:
            m.stats.route = "already stored"
        m.log(f"{day}: {m.stats.rows_written} bars written via {m.stats.route}, "
              f"{len(stored)} already stored, {m.stats.api_calls} API calls.")
        return m.result(day_checks(warehouse, day))  # over what is stored now


def day_checks(warehouse: WarehouseResource, day: dt.date) -> list[dg.AssetCheckResult]:
    return [checks_mod.prices_sane(warehouse, day=day),
            checks_mod.coverage(warehouse, day, trading.is_session(day)),
            checks_mod.no_duplicates(warehouse, "market.prices", day)]


def routes(fmp: FMPResource, day: dt.date) -> list[str]:
    """The routes for a day's bars, cheapest first, as far as the plan serves them."""
    found = []
    if get_plan(fmp.plan).serves("eod-bulk"):
        found.append("eod-bulk")
    if day == trading.last_closed_session():
        found.append("batch-quote")
    return found + ["historical-price-eod/full"]


def route_cost(route: str, batch_size: int) -> Callable[[int], int]:
    """Calls a route makes for n symbols."""
    if route == "eod-bulk":
        return lambda n: 1 if n else 0
    if route == "batch-quote":
        return lambda n: calls_for(n, batch_size)
    return lambda n: n


def fetch_day(m: Materialization, missing: list[str]) -> None:
    """The day's missing bars by the cheapest route that the plan really serves."""
    by_route = {"eod-bulk": via_bulk, "batch-quote": via_quotes, "historical-price-eod/full": via_history}
    for route in routes(m.fmp, m.day):
        m.stats.route = route
        try:
            by_route[route](m, missing)
            return
        except FMPPlanError as error:
            note = f"{route} is not in the plan (402); falling back to the next cheaper route"
            m.stats.notes.append(note)
            m.warn(f"{note}: {error}")


def via_bulk(m: Materialization, missing: list[str]) -> None:
    wanted = set(missing)
    with m.stats.phase("fetch") as phase:
        parsed = m.fmp.eod_bulk(m.day, keep=wanted.__contains__)
        phase.items = phase.succeeded = len(parsed.records)
    m.write(lambda: m.warehouse.write_prices(parsed.records, "eod-bulk", rejects=parsed.rejects, run_id=m.run_id),
            len(parsed.records))
    m.stats.rejects += len(parsed.rejects)
    m.count_items(len(missing))
    note_no_bar(m, missing, {bar.symbol for bar in parsed.records})
    m.stats.optimized("bulk EOD", len(missing), len(missing), len(missing) - 1)


def via_quotes(m: Materialization, missing: list[str]) -> None:
    close = trading.session_close(m.day)
    size = m.fmp.quote_batch_size
    batches = [tuple(missing[i:i + size]) for i in range(0, len(missing), size)]
    got: set[str] = set()

    def fetch(batch: Sequence[str]) -> Parsed:
        parsed = m.fmp.batch_quotes(batch)
        # A quote stands for the session's bar only if it was taken after the close.
        parsed.records = [q for q in parsed.records if q.timestamp >= close]
        got.update(q.symbol for q in parsed.records)
        return parsed

    def write(fetched: Fetched) -> int:
        return m.warehouse.write_quotes(fetched.records, m.day, rejects=fetched.rejects, run_id=m.run_id)

    # A 402 stops the fetch (it would answer every batch alike) and reaches
    # fetch_day, which takes the next route.
    summary = m.fetch_and_write(batches, fetch, write, weight=len)
    # Count symbols, not batches, so that shares mean the same on every route.
    m.count_items(len(missing), [s for f in summary.failures for s in f.item])
    note_no_bar(m, missing, got)
    m.stats.optimized("batched quotes", len(missing), len(missing), len(missing) - len(batches))


def via_history(m: Materialization, missing: list[str]) -> None:
    def write(fetched: Fetched) -> int:
        return m.warehouse.write_prices(fetched.records, "historical-price-eod/full", rejects=fetched.rejects,
                                        run_id=m.run_id)

    summary = m.fetch_and_write(missing, lambda symbol: m.fmp.historical_prices(symbol, m.day, m.day), write)
    m.count_items(summary.total, [f.item for f in summary.failures])


def note_no_bar(m: Materialization, asked: list[str], got: set[str]) -> None:
    """Symbols FMP had no bar for (halted, not yet trading) were answered, not failed."""
    no_bar = sum(1 for s in asked if s not in got)
    if no_bar:
        m.stats.notes.append(f"{no_bar} symbols had no bar for the day")


@dg.asset(group_name="prices", partitions_def=symbol_shards, deps=[symbols], pool=FMP_POOL,
          kinds={"duckdb"}, metadata={"dagster/column_schema": column_schema("prices")},
          check_specs=checks_mod.specs("price_history", symbol_shards, checks_mod.PRICES_SANE,
                                       checks_mod.SPLITS_RESTATED, checks_mod.NO_SPLIT_JUMPS,
                                       checks_mod.ITEM_SUCCESS),
          description="Full price history from the configured start for the shard's symbols "
                      "not yet covered: market.prices.")
def price_history(context: dg.AssetExecutionContext, fmp: FMPResource, warehouse: WarehouseResource,
                  settings: SyncSettings) -> dg.MaterializeResult:
    with Materialization(context, fmp, warehouse, settings) as m:
        end = trading.last_closed_session()
        start = history_start(settings, end)
        with m.stats.phase("plan"):
            shard_symbols = sorted(warehouse.universe_symbols(shard=m.partition_key))
            todo = shard_symbols if settings.refresh else warehouse.symbols_needing_history(
                "prices", shard_symbols, start)
            restate = warehouse.symbols_needing_restatement("prices", shard_symbols)
            todo = list(dict.fromkeys(todo + restate))
            # A restated history replaces all the symbol's bars: fetched from its first one, which
            # the rolling start (`history_years` before the last session) may have passed since.
            first = {s: min(day, start) for s, day in warehouse.first_bar_dates(restate).items()}
        m.restating(restate)
        covered = len(shard_symbols) - len(todo)
        m.stats.items_skipped = covered
        m.stats.route = "historical-price-eod/full"
        if covered:
            years = max(1.0, (end - start).days / 365.25)
            m.stats.optimized("staleness filter", len(shard_symbols), covered,
                              covered * calls_for(round(years * 252), 5000))

        def write(fetched: Fetched) -> int:
            return warehouse.write_price_history(fetched.items, (start, end), fetched.records,
                                                 rejects=fetched.rejects, run_id=m.run_id,
                                                 restated=[s for s in fetched.items if s in restate])

        summary = m.fetch_and_write(todo, lambda symbol: fmp.price_history(symbol, first.get(symbol, start), end),
                                    write)
        m.count_items(summary.total, [f.item for f in summary.failures])
        return m.result([checks_mod.prices_sane(warehouse, shard=m.partition_key),
                         checks_mod.splits_restated(warehouse, m.partition_key),
                         checks_mod.no_split_jumps(warehouse, m.partition_key)])


def history_start(settings: SyncSettings, end: dt.date) -> dt.date:
    if settings.history_start:
        return dt.date.fromisoformat(settings.history_start)
    return end - dt.timedelta(days=round(365.25 * settings.history_years))
