"""The day's `profile-bulk` download (Ultimate): every profile FMP has, in a few CSV parts.

On a plan that serves it, the download is the universe refresh's source and the full profiles'
too: its rows carry every column of the screener (symbol, name, sector, industry, exchange,
trading status, price, market cap, beta, volume, last dividend) and the rest of the profile. One
download a day, read to the part past the last (FMP gives no part count; that part answers 400),
serves both; the company screener's pages (three exchanges, paged to an empty page: 8 calls at
19,205 symbols) and a profile refresh cycle are then not needed. Measured on the simulator at
19,205 symbols (bench/bench_daily.py): an Ultimate day of 35 calls with the screener and a daily
slice of bulk profiles, 15 with this (6 of them these parts). The price: a first load waits for
the download (~150 s under FMP's bulk throttle of two calls a minute) before its history calls.

The parts are cached as Parquet under the warehouse's folder, one folder per day, guarded by a
file lock: whichever step asks first downloads, the others read the cache. A killed download
resumes at the next missing part.
"""

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from filelock import FileLock

from stock_assets import trading
from stock_assets.fmp import FMPQueryError, FMPResource, ScreenerRow
from stock_assets.warehouse import WarehouseResource, profiles_table

MAX_PARTS = 50  # FMP gives no part count; stop well past any real one (~5 at 92k profiles)


def cache_dir(warehouse: WarehouseResource) -> Path:
    return Path(warehouse.database).parent / "cache" / "profile-bulk"


def download(fmp: FMPResource, warehouse: WarehouseResource, session: dt.date,
             log: Callable[[str], None]) -> pa.Table:
    """The bulk profiles as of the closed `session` (every part), downloaded once after it, then read
    from the cache: a download taken before a session's close, or after it, belongs to that session
    alone, so the next session's sync downloads again.

    Raises FMPPlanError (402) when the plan does not serve `profile-bulk`."""
    day_dir = cache_dir(warehouse) / session.isoformat()
    day_dir.mkdir(parents=True, exist_ok=True)
    done = day_dir / "complete"
    with FileLock(str(day_dir / ".lock")):
        if not done.exists():
            fetched_at = trading.now_utc()
            for part in range(MAX_PARTS):
                target = day_dir / f"part-{part}.parquet"
                if target.exists():
                    continue
                parsed = fmp.profile_bulk(part)
                if parsed is None and part == 0:
                    raise FMPQueryError("profile-bulk answered part 0 with a 400: no bulk file today; "
                                        "try again later", endpoint="profile-bulk", status=400)
                if parsed is None:  # the part past the last: the download is whole
                    break
                partial = target.with_suffix(".partial")  # a killed write leaves no unreadable part
                pq.write_table(profiles_table(parsed.records, fetched_at), partial)
                partial.replace(target)
                log(f"profile-bulk part {part}: {len(parsed.records)} profiles cached")
            done.touch()
    return pa.concat_tables([pq.read_table(p) for p in sorted(day_dir.glob("part-*.parquet"))])


def screener_rows(table: pa.Table, exchanges: list[str], include_etfs: bool) -> list[ScreenerRow]:
    """The bulk rows the screener would list for `exchanges` (actively trading, no funds, ETFs
    as configured), as screener rows: the universe refresh writes them the same way. Filtered in
    Arrow first: the file holds every venue's profiles (~92k), the US exchanges a fifth of them."""
    keep = pc.and_(pc.is_in(pc.utf8_upper(table["exchange"]), value_set=pa.array([e.upper() for e in exchanges])),
                   pc.and_not(pc.fill_null(table["is_actively_trading"], True), pc.fill_null(table["is_fund"], False)))
    if not include_etfs:
        keep = pc.and_not(keep, pc.fill_null(table["is_etf"], False))
    listed = table.filter(pc.fill_null(keep, False)).select(list(_SCREENER_COLUMNS))
    return [ScreenerRow(**{field: row[column] for column, field in _SCREENER_COLUMNS.items()})
            for row in listed.to_pylist()]


# Bulk profile column -> screener field: the screener's `exchange` is the venue's full name, its
# `exchangeShortName` the profile's `exchange`; its last annual dividend is the profile's last dividend.
_SCREENER_COLUMNS = {
    "symbol": "symbol", "company_name": "company_name", "market_cap": "market_cap", "sector": "sector",
    "industry": "industry", "beta": "beta", "price": "price", "last_dividend": "last_annual_dividend",
    "volume": "volume", "exchange_full_name": "exchange", "exchange": "exchange_short_name", "country": "country",
    "is_etf": "is_etf", "is_fund": "is_fund", "is_actively_trading": "is_actively_trading",
}
