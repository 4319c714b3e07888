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

from stock_assets.defs import checks as checks_mod
from stock_assets import revisions, trading
from stock_assets.defs.assets.common import FMP_POOL, ensure_closed
from stock_assets.defs.assets.materialization import Fetched, Materialization
from stock_assets.defs.assets.universe import symbols
from stock_assets.fmp import FMPPlanError, FMPResource, Parsed, get_plan
from stock_assets.defs.partitions import latest_session_day, symbol_shards
from stock_assets.defs.resources import SyncSettings
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
            if not warehouse.universe_symbols():
                raise dg.Failure("market.symbols is empty: materialize `symbols` first.")
            listed = warehouse.day_coverage(day)
            # Every symbol listed that session without its bar; one the source had none for is asked again.
            missing = sorted(listed.missing + list(listed.absent))
            if settings.refresh:
                missing = listed.listed
        if not trading.is_session(day):
            return m.market_closed(calls_for(len(warehouse.universe_symbols()), fmp.quote_batch_size),
                                   day_checks(warehouse, day))
        stored = len(listed.listed) - len(missing)
        m.stats.items_skipped = stored
        if stored:
            # Bars already stored (by price_history or an earlier run) cost nothing:
            # saved is what the route would have cost for all minus for the rest.
            cost = route_cost(routes(fmp, day)[0], fmp.quote_batch_size)
            considered = len(listed.listed)
            m.stats.optimized("staleness filter", considered, stored, cost(considered) - cost(len(missing)))
        if missing:
            fetch_day(m, missing)
        else:
            m.stats.route = "already stored"
        if m.stats.route in ("eod-bulk", "already stored") and get_plan(fmp.plan).serves("eod-bulk") \
                and day == latest_session_day():
            recheck_bulk(m, set(listed.listed))
        m.log(f"{day}: {m.stats.rows_written} bars written via {m.stats.route}, "
              f"{stored} already stored, {m.stats.api_calls} API calls.")
        return m.result(day_checks(warehouse, day))  # over what is stored now: complete, or Failed


def day_checks(warehouse: WarehouseResource, day: dt.date) -> list[dg.AssetCheckResult]:
    return [checks_mod.prices_sane(warehouse, day=day),
            checks_mod.coverage(warehouse, day, trading.is_session(day)),
            checks_mod.no_duplicates(warehouse, "market.prices", day)]


def routes(fmp: FMPResource, day: dt.date) -> list[str]:
    """The routes for a day's bars, cheapest first, as far as the plan serves them."""
    found = []
    if get_plan(fmp.plan).serves("eod-bulk"):
        found.append("eod-bulk")
    if trading.quotes_stand_for(day):  # after its close, before the next open
        found.append("batch-quote")
    return found + [HISTORY]


HISTORY = "historical-price-eod/full"


def route_cost(route: str, batch_size: int) -> Callable[[int], int]:
    """Calls a route makes for n symbols."""
    if route == "eod-bulk":
        return lambda n: 1 if n else 0
    if route == "batch-quote":
        return lambda n: calls_for(n, batch_size)
    return lambda n: n


def fetch_day(m: Materialization, missing: list[str]) -> None:
    """The day's missing bars by the cheapest route that the plan really serves; the symbols that
    route left without a bar, from their own end-of-day history (the source's last word on them),
    unless that history had no bar when last asked: then they rest (1, 2, 4 ... days), named."""
    by_route = {"eod-bulk": via_bulk, "batch-quote": via_quotes}
    *cheaper, _ = routes(m.fmp, m.day)
    got = None
    for route in cheaper:
        m.stats.route = route
        try:
            got = by_route[route](m, missing)
            break
        except FMPPlanError as error:
            note = f"{route} is not in the plan (402); falling back to the next cheaper route"
            m.stats.notes.append(note)
            m.warn(f"{note}: {error}")
    if got is None:
        m.stats.route, got = HISTORY, set()
    lacking = [s for s in missing if s not in got]
    # Only the latest session skips a resting symbol's history: a past or missed session's bars are
    # what that history holds (a halt that ended, a gap), and nothing else would fetch them.
    resting = m.warehouse.resting_after_empty("prices") & set(lacking) if m.day == latest_session_day() else set()
    asked = [s for s in lacking if s not in resting]
    if asked and m.stats.route != HISTORY:
        m.stats.notes.append(f"{len(asked)} symbols without a bar from {m.stats.route}: asked their history")
        m.log(f"{len(asked)} symbols had no bar from {m.stats.route}; asking their end-of-day history: "
              f"{', '.join(asked[:20])}")
    if asked:
        got |= via_history(m, asked)
    # No bar at the source: its history answered, with no row for the day (not an error, not a row
    # we had to reject: those leave the day incomplete, and it fails naming them).
    no_bar = [s for s in asked if s not in got and s not in m.stats.failed_items and s not in m.invalid]
    m.warehouse.record_empty_answers("prices", no_bar, answered=got)  # a bar, by any route, ends a rest
    absent = {s: f"{HISTORY} answered no bar for the day" for s in no_bar}
    absent |= {s: f"{HISTORY} had no bar for it when last asked; asked again after a backoff" for s in resting}
    m.warehouse.write_bars_absent(m.day, absent)
    if absent:
        m.stats.notes.append(f"{len(absent)} symbols have no bar for the day at the source"
                             + (f" ({len(resting)} resting after an empty answer)" if resting else ""))


def recheck_bulk(m: Materialization, listed: set[str]) -> None:
    """The sessions before the day read again from `eod-bulk`: FMP's revisions of recent bars."""
    for day in revisions.recheck_days(m.day):
        try:
            with m.stats.phase("fetch") as phase:
                parsed = m.fmp.eod_bulk(day, keep=listed.__contains__)
                phase.items = phase.succeeded = len(parsed.records)
        except FMPPlanError:
            return  # the day's own route said so already
        written, revised = m.warehouse.write_official_prices(parsed.records, "eod-bulk", rejects=parsed.rejects,
                                                             run_id=m.run_id)
        m.stats.revisions_repaired += revised
    if m.stats.revisions_repaired:
        m.stats.notes.append(f"{m.stats.revisions_repaired} stored bars of the sessions before corrected by eod-bulk")


def via_bulk(m: Materialization, missing: list[str]) -> set[str]:
    wanted = set(missing)
    with m.stats.phase("fetch") as phase:
        parsed = m.fmp.eod_bulk(m.day, keep=wanted.__contains__)
        phase.items = phase.succeeded = len(parsed.records)
    m.write(lambda: m.warehouse.write_prices(parsed.records, "eod-bulk", rejects=parsed.rejects, run_id=m.run_id),
            len(parsed.records))
    m.stats.rejects += len(parsed.rejects)
    got = {bar.symbol for bar in parsed.records}
    m.count_items(len(got))
    m.stats.optimized("bulk EOD", len(missing), len(got), len(got) - 1)
    return got


def via_quotes(m: Materialization, missing: list[str]) -> set[str]:
    close, next_open = trading.session_close(m.day), trading.next_open(m.day)
    size = m.fmp.quote_batch_size
    batches = [tuple(missing[i:i + size]) for i in range(0, len(missing), size)]
    got: set[str] = set()

    def fetch(batch: Sequence[str]) -> Parsed:
        parsed = m.fmp.batch_quotes(batch)
        # A quote stands for the session's bar only if it was taken after its close and before
        # the next open: from then on it is the next session's.
        parsed.records = [q for q in parsed.records if close <= q.timestamp < next_open]
        return parsed

    def write(fetched: Fetched) -> int:
        written = m.warehouse.write_quotes(fetched.records, m.day, rejects=fetched.rejects, run_id=m.run_id)
        got.update(q.symbol for q in fetched.records)
        return written

    # A 402 stops the fetch (it would answer every batch alike) and reaches
    # fetch_day, which takes the next route.
    m.fetch_and_write(batches, fetch, write, weight=len)
    # Count symbols, not batches, so that shares mean the same on every route; a symbol left
    # without a bar (its batch failed, or its quote was not the day's) is asked again by
    # history (fetch_day), and counted there.
    m.count_items(len(got))
    m.stats.optimized("batched quotes", len(got), len(got), len(got) - len(batches))
    return got


def via_history(m: Materialization, symbols: list[str]) -> set[str]:
    """Each symbol's end-of-day bars from the partition's day to the latest session: one call fills
    a gap of several sessions (a week away), whose later partitions then find their bars stored."""
    end = max(m.day, latest_session_day())
    got: set[str] = set()

    def write(fetched: Fetched) -> int:
        got.update(bar.symbol for bar in fetched.records if bar.date == m.day)
        m.invalid.update(r.key for r in fetched.rejects)
        return m.warehouse.write_prices(fetched.records, HISTORY, rejects=fetched.rejects, run_id=m.run_id)

    summary = m.fetch_and_write(symbols, lambda symbol: m.fmp.historical_prices(symbol, m.day, end), write)
    m.count_items(summary.total, [f.item for f in summary.failures])
    return got


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
            shard_symbols = sorted(warehouse.universe_symbols(m.shards))
            todo = shard_symbols if settings.refresh else warehouse.symbols_needing_history(
                "prices", shard_symbols, start)
            restate = warehouse.symbols_needing_restatement("prices", shard_symbols)
            todo = list(dict.fromkeys(todo + restate))
            # A restated history replaces all the symbol's bars: fetched from its first one, which
            # the rolling start (`history_years` before the last session) may have passed since.
            first = {s: min(day, start) for s, day in warehouse.first_bar_dates(restate).items()}
            confirm = revisions.confirmations_due(warehouse, shard_symbols, end, settings.profile_max_age_days,
                                                  on_turn=not get_plan(fmp.plan).serves("eod-bulk"))
        m.restating(restate)
        covered = len(shard_symbols) - len(todo)
        m.stats.items_skipped = covered
        m.stats.route = "historical-price-eod/full"
        if covered:
            years = max(1.0, (end - start).days / 365.25)
            m.stats.optimized("staleness filter", len(shard_symbols), covered,
                              covered * calls_for(round(years * 252), 5000))

        def write(fetched: Fetched) -> int:
            # A history without a bar (listed before its first trade, or FMP's gap) is not loaded: it
            # rests, and is asked again after a backoff; it never replaces stored bars.
            bars = {symbol: len(table) for symbol, table in zip(fetched.items, fetched.records)}
            loaded = [s for s in fetched.items if bars[s]]
            warehouse.record_empty_answers("prices", [s for s in fetched.items if not bars[s]], loaded)
            return warehouse.write_price_history(loaded, (start, end), fetched.records,
                                                 rejects=fetched.rejects, run_id=m.run_id,
                                                 restated=[s for s in loaded if s in restate])

        summary = m.fetch_and_write(todo, lambda symbol: fmp.price_history(symbol, first.get(symbol, start), end),
                                    write)
        m.count_items(summary.total, [f.item for f in summary.failures])
        confirm_recent_bars(m, [s for s in confirm if s not in todo], end)
        return m.result([checks_mod.prices_sane(warehouse, shards=m.shards),
                         checks_mod.splits_restated(warehouse, m.shards),
                         checks_mod.no_split_jumps(warehouse, m.shards)])


def confirm_recent_bars(m: Materialization, symbols: list[str], end: dt.date) -> None:
    """`symbols`' last cycle of bars from FMP's official history, over what is stored (`revisions`)."""
    if not symbols:
        return
    start = revisions.confirm_from(end, m.settings.profile_max_age_days)
    m.log(f"Confirming the bars since {start} of {len(symbols)} symbols against FMP's end-of-day history "
          f"(their refresh turn, or a quote-derived bar overdue).")

    def write(fetched: Fetched) -> int:
        written, revised = m.warehouse.write_official_prices(fetched.records, HISTORY, rejects=fetched.rejects,
                                                             run_id=m.run_id)
        m.stats.revisions_repaired += revised
        return written

    summary = m.fetch_and_write(symbols, lambda symbol: m.fmp.price_history(symbol, start, end), write)
    m.count_items(summary.total, [f.item for f in summary.failures])
    if m.stats.revisions_repaired:
        m.stats.notes.append(f"{m.stats.revisions_repaired} stored bars corrected by FMP's end-of-day history")


def history_start(settings: SyncSettings, end: dt.date) -> dt.date:
    if settings.history_start:
        return dt.date.fromisoformat(settings.history_start)
    return end - dt.timedelta(days=round(365.25 * settings.history_years))
