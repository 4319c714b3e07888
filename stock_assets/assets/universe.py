"""`symbols`: the US universe, from FMP's company screener, with each symbol's shard.

The same screener pages carry the daily layer of the company profiles (price,
market cap, beta, volume, last dividend, trading status, name, sector,
industry, exchange): writing the universe rewrites it in
`market.company_profiles` at no extra call, and marks the profiles whose name,
sector, industry or exchange changed for a full profile (`profile_refresh`).
"""


from pathlib import Path

import dagster as dg

from stock_assets import checks as checks_mod
from stock_assets import trading
from stock_assets.assets.common import FMP_POOL
from stock_assets.assets.materialization import Materialization
from stock_assets.fmp import FMPResource, ScreenerRow
from stock_assets.partitions import shard_of
from stock_assets.resources import SyncSettings
from stock_assets.warehouse import WarehouseResource, column_schema

SCREENER_PAGE = 10_000
# The newest delistings, one call a day: US listings are delisted a few a week,
# so a day's refresh finds every one of them on the first page.
DELISTINGS_PAGE = 100


def screen_exchange(fmp: FMPResource, exchange: str, include_etfs: bool) -> tuple[list[ScreenerRow], int]:
    """Every actively trading non-fund listing of one exchange, page by page."""
    rows, rejects, page = [], 0, 0
    while True:
        parsed = fmp.company_screener(exchange, limit=SCREENER_PAGE, page=page,
                                      is_actively_trading=True, is_fund=False,
                                      is_etf=None if include_etfs else False)
        rows += parsed.records
        rejects += len(parsed.rejects)
        if len(parsed.records) + len(parsed.rejects) < SCREENER_PAGE:
            return rows, rejects
        page += 1


def _wanted(settings: SyncSettings) -> set[str] | None:
    if not settings.symbol_file:
        return None
    lines = Path(settings.symbol_file).read_text().split()
    return {line.strip().upper() for line in lines if line.strip()}


@dg.asset(group_name="universe", pool=FMP_POOL, kinds={"duckdb"},
          metadata={"dagster/column_schema": column_schema("symbols")},
          check_specs=checks_mod.specs("symbols", None, checks_mod.NO_DUPLICATES),
          description="The US universe (NYSE, NASDAQ, AMEX common stocks and ETFs by default) "
                      "from FMP's company screener, each symbol with its shard: market.symbols.")
def symbols(context: dg.AssetExecutionContext, fmp: FMPResource, warehouse: WarehouseResource,
            settings: SyncSettings) -> dg.MaterializeResult:
    with Materialization(context, fmp, warehouse, settings) as m:
        m.stats.route = "company-screener"
        wanted = _wanted(settings)
        by_symbol: dict[str, ScreenerRow] = {}
        with m.stats.phase("fetch") as phase:
            for exchange in settings.exchanges:
                rows, rejects = screen_exchange(fmp, exchange, settings.include_etfs)
                m.stats.rejects += rejects
                by_symbol.update((row.symbol, row) for row in rows
                                 if wanted is None or row.symbol.upper() in wanted)
            phase.items = phase.succeeded = len(by_symbol)
        if not by_symbol:
            raise dg.Failure(f"The screener returned no symbols for {settings.exchanges}: check the "
                             f"exchange names (NYSE, NASDAQ, AMEX) or the symbol file.")
        rows = sorted(by_symbol.values(), key=lambda r: r.symbol)
        with m.stats.phase("write") as phase:
            written = warehouse.write_universe(rows, shard_of, trading.now_utc())
            phase.items = phase.succeeded = len(rows)
        m.stats.rows_written += written.symbols + written.profiles_screened
        m.count_items(len(rows))
        # Symbols that left the screener stay, not listed; FMP's latest delistings date them,
        # and its renames link an old symbol to the new one (one call each a day).
        with m.stats.phase("fetch") as phase:
            delisted = fmp.delisted_companies(page=0, limit=DELISTINGS_PAGE)
            phase.items = phase.succeeded = len(delisted.records)
            changes = fmp.symbol_changes()
            phase.items += len(changes.records)
            phase.succeeded = phase.items
        dated = warehouse.write_delistings(delisted.records)
        renames = warehouse.write_symbol_changes(changes.records)
        shards = {shard_of(s) for s in by_symbol}
        m.log(f"Universe: {len(rows)} symbols in {len(shards)} shards from {', '.join(settings.exchanges)}; "
              f"{written.profiles_screened} profiles refreshed from the screener, "
              f"{len(written.screener_changes)} of them changed (a full profile is due); "
              f"{dated} symbols no longer listed dated from delisted-companies, {renames} renames stored.")
        for symbol, change in sorted(written.screener_changes.items())[:20]:
            m.log(f"  {symbol}: {change}")
        return m.result([checks_mod.no_duplicates(warehouse, "market.symbols")], shards=len(shards),
                        delistings_dated=dated, renames=renames, profiles_screened=written.profiles_screened,
                        profiles_changed=len(written.screener_changes))
