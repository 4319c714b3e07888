"""`symbols`: the US universe, from FMP's company screener, with each symbol's shard.

The same screener pages carry the daily layer of the company profiles (price,
market cap, beta, volume, last dividend, trading status, name, sector,
industry, exchange): writing the universe rewrites it in
`market.company_profiles` at no extra call, and marks the profiles whose name,
sector, industry or exchange changed for a full profile (`profile_refresh`).

On a plan that serves `profile-bulk` (Ultimate), the day's bulk download is the
source instead (`profile_bulk`): its rows are the screener's and the full
profiles at once, so every full profile is written daily with the universe.
"""


from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from stock_assets.defs import checks as checks_mod
from stock_assets import clock, trading
from stock_assets.defs.assets import profile_bulk
from stock_assets.defs.assets.common import FMP_POOL
from stock_assets.defs.assets.materialization import Materialization
from stock_assets.fmp import (FMPPlanError, FMPQueryError, FMPRateLimitError, FMPResource, FMPTransientError,
                              ScreenerRow, get_plan)
from stock_assets.defs.partitions import shard_of
from stock_assets.defs.resources import SyncSettings
from stock_assets.warehouse import WarehouseResource, column_schema

SCREENER_PAGE = 10_000
# FMP documents no page cap and answers short pages at times: paging goes on until an empty page,
# and stops here (far past any US exchange) rather than loop on a source that never ends.
MAX_PAGES = 20
# The newest delistings, one call a day: US listings are delisted a few a week,
# so a day's refresh finds every one of them on the first page.
DELISTINGS_PAGE = 100
# A symbol the screener leaves out on this many sessions running leaves the universe (FMP's own
# word, delisted-companies or symbol-change, takes it out at once): one short page must not.
ABSENT_SESSIONS = 3
# A day's answer that lacks more than this share of an exchange's listed symbols (and more than
# UNUSUAL_DROP_MIN of them) is FMP's error, not a wave of delistings (a few a week): the last
# universe is kept. Measured against real days: delistings take ~0.1% of an exchange a week.
UNUSUAL_DROP = 0.02
UNUSUAL_DROP_MIN = 10


def screen_exchange(fmp: FMPResource, exchange: str, include_etfs: bool) -> tuple[list[ScreenerRow], int]:
    """Every actively trading non-fund listing of one exchange, page by page until FMP answers an
    empty page (a short page is no end: FMP answers them mid-list). Pages may overlap: by symbol."""
    rows: dict[str, ScreenerRow] = {}
    rejects = 0
    for page in range(MAX_PAGES):
        parsed = fmp.company_screener(exchange, limit=SCREENER_PAGE, page=page,
                                      is_actively_trading=True, is_fund=False,
                                      is_etf=None if include_etfs else False)
        if not parsed.records and not parsed.rejects:
            return list(rows.values()), rejects
        rows.update((row.symbol, row) for row in parsed.records)
        rejects += len(parsed.rejects)
    raise dg.Failure(f"company-screener for {exchange} still answered rows on page {MAX_PAGES}: the universe "
                     f"was not refreshed. Try again later; if it persists, FMP's paging has changed.")


def listings(m: Materialization) -> tuple[list[ScreenerRow], pa.Table | None]:
    """Today's listings of the configured exchanges, and the bulk profiles they came from if they did."""
    settings = m.settings
    if get_plan(m.fmp.plan).serves("profile-bulk"):
        try:
            table = profile_bulk.download(m.fmp, m.warehouse, trading.last_closed_session(), m.log)
            m.stats.route = "profile-bulk"
            return profile_bulk.screener_rows(table, settings.exchanges, settings.include_etfs), table
        except (FMPPlanError, FMPQueryError, FMPRateLimitError, FMPTransientError) as error:
            note = f"profile-bulk failed ({type(error).__name__}); the universe comes from company-screener"
            m.stats.notes.append(note)
            m.warn(f"{note}: {error}")
    m.stats.route = "company-screener"
    rows = []
    for exchange in settings.exchanges:
        screened, rejects = screen_exchange(m.fmp, exchange, settings.include_etfs)
        m.stats.rejects += rejects
        rows += screened
    return rows, None


def unusual_drops(listed: dict[str, set[str]], screened: set[str], gone: set[str]) -> dict[str, int]:
    """Exchange -> listed symbols today's answer lacks, where that is more than a day's delistings."""
    drops = {}
    for exchange, symbols in listed.items():
        lacking = len(symbols - screened - gone)
        if lacking > max(UNUSUAL_DROP * len(symbols), UNUSUAL_DROP_MIN):
            drops[exchange] = lacking
    return drops


def _wanted(settings: SyncSettings) -> set[str] | None:
    if not settings.symbol_file:
        return None
    lines = Path(settings.symbol_file).read_text().split()
    return {line.strip().upper() for line in lines if line.strip()}


@dg.asset(group_name="universe", pool=FMP_POOL, kinds={"duckdb"},
          metadata={"dagster/column_schema": column_schema("symbols")},
          check_specs=checks_mod.specs("symbols", None, checks_mod.NO_DUPLICATES),
          description="The US universe (NYSE, NASDAQ, AMEX common stocks and ETFs by default) "
                      "from FMP's company screener (Ultimate: its bulk profiles), each symbol with its "
                      "shard: market.symbols.")
def symbols(context: dg.AssetExecutionContext, fmp: FMPResource, warehouse: WarehouseResource,
            settings: SyncSettings) -> dg.MaterializeResult:
    with Materialization(context, fmp, warehouse, settings) as m:
        wanted = _wanted(settings)
        with m.stats.phase("fetch") as phase:
            listed, bulk = listings(m)
            by_symbol = {row.symbol: row for row in listed if wanted is None or row.symbol.upper() in wanted}
            # Symbols that left the screener stay, not listed; FMP's latest delistings date them,
            # and its renames link an old symbol to the new one (one call each a day).
            delisted = fmp.delisted_companies(page=0, limit=DELISTINGS_PAGE)
            changes = fmp.symbol_changes()
            phase.items = phase.succeeded = len(by_symbol) + len(delisted.records) + len(changes.records)
        if not by_symbol:
            raise dg.Failure(f"{m.stats.route} returned no symbols for {settings.exchanges}: check the "
                             f"exchange names (NYSE, NASDAQ, AMEX) or the symbol file.")
        today = trading.now_utc().astimezone(clock.NEW_YORK).date()
        gone = ({d.symbol for d in delisted.records if d.delisted_date and d.delisted_date <= today}
                | {c.old_symbol for c in changes.records if c.date <= today})
        drops = unusual_drops(warehouse.listed_by_exchange(), set(by_symbol), gone)
        if drops:
            note = (f"{m.stats.route}'s answer lacks an unusual share of {', '.join(f'{e} ({n} symbols)' for e, n in drops.items())}: "
                    f"taken as FMP's error; the last universe is kept (only what FMP says is delisted or renamed leaves)")
            m.stats.notes.append(note)
            m.warn(note)
        rows = sorted(by_symbol.values(), key=lambda r: r.symbol)
        if bulk is not None:  # every listed symbol's full profile, from the same download: none is due
            m.write(lambda: warehouse.write_profiles(
                bulk.filter(pc.is_in(bulk["symbol"], value_set=pa.array(sorted(by_symbol))))), len(by_symbol))
        with m.stats.phase("write") as phase:
            written = warehouse.write_universe(
                rows, shard_of, trading.now_utc(), gone=gone, today=today,
                absent_from=None if drops else trading.sessions_back(today, ABSENT_SESSIONS - 1))
            phase.items = phase.succeeded = len(rows)
        m.stats.rows_written += written.symbols + written.profiles_screened
        m.count_items(len(rows))
        dated = warehouse.write_delistings(delisted.records)
        renames = warehouse.write_symbol_changes(changes.records)
        shards = {shard_of(s) for s in by_symbol}
        m.log(f"Universe: {len(rows)} symbols in {len(shards)} shards from {', '.join(settings.exchanges)}; "
              f"{written.profiles_screened} profiles refreshed from {m.stats.route}, "
              f"{len(written.screener_changes)} of them changed in name, sector, industry or exchange; "
              f"{dated} symbols no longer listed dated from delisted-companies, {renames} renames stored.")
        for symbol, change in sorted(written.screener_changes.items())[:20]:
            m.log(f"  {symbol}: {change}")
        return m.result([checks_mod.no_duplicates(warehouse, "market.symbols")], shards=len(shards),
                        delistings_dated=dated, renames=renames, profiles_screened=written.profiles_screened,
                        profiles_changed=len(written.screener_changes),
                        unusual_drops=", ".join(f"{e}: {n}" for e, n in drops.items()) or "none")
