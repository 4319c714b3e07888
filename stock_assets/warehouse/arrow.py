"""Records -> `pyarrow.Table`s with the exact schema of their warehouse table.

The warehouse never inserts row by row: the FMP client's validated records are
turned into columns here, and `WarehouseResource.upsert` hands the whole table
to DuckDB (an Arrow scan, millions of rows a second).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, Callable, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

import pyarrow as pa

from stock_assets import clock
from stock_assets.fmp.records import (
    BAR_COLUMNS, Dividend, EodBar, HistoricalBar, Profile, Quote, Reject, ScreenerRow, Split, SymbolChange)

from . import schema as S

NEW_YORK = ZoneInfo("America/New_York")

SOURCE_EOD_BULK = "eod-bulk"
SOURCE_BATCH_QUOTE = "batch-quote"
SOURCE_HISTORICAL = "historical-price-eod/full"


def utc_naive(value: dt.datetime | None = None) -> dt.datetime:
    """A UTC timestamp without tzinfo, as the warehouse's TIMESTAMP columns store it."""
    if value is None:
        return clock.now().replace(tzinfo=None)
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def _table(table: S.Table, columns: Mapping[str, Sequence[Any]], n: int) -> pa.Table:
    """Build `table`'s Arrow schema from column lists; absent columns are all NULL."""
    schema = table.arrow_schema()
    arrays = []
    for f in schema:
        values = columns.get(f.name)
        if values is None:
            arrays.append(pa.nulls(n, f.type))
        else:
            arrays.append(pa.array(values, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _columns(records: Sequence[Any], names: Sequence[str]) -> dict[str, list[Any]]:
    return {name: [getattr(r, name, None) for r in records] for name in names}


def symbols_table(
    rows: Iterable[ScreenerRow],
    shard_of: Callable[[str], str],
    updated_at: dt.datetime | None = None,
) -> pa.Table:
    rows = list(rows)
    names = [c for c in S.SYMBOLS.column_names
             if c not in ("shard", "listed", "last_listed", "delisted_date", "absent_since", "updated_at")]
    cols = _columns(rows, names)
    cols["shard"] = [shard_of(r.symbol) for r in rows]
    now = utc_naive(updated_at)
    cols["listed"] = [True] * len(rows)
    cols["last_listed"] = [now.date()] * len(rows)
    cols["delisted_date"] = [None] * len(rows)
    cols["updated_at"] = [now] * len(rows)
    return _table(S.SYMBOLS, cols, len(rows))


_PRICE_FIELDS = ("symbol", "date", "open", "high", "low", "close", "volume")


def prices_table(
    bars: Iterable[EodBar | HistoricalBar | Mapping[str, Any]],
    source: str,
    loaded_at: dt.datetime | None = None,
) -> pa.Table:
    """Bars from `eod-bulk` (EodBar), `historical-price-eod/full` (HistoricalBar)
    or dicts with the snake_case price fields (a dict's own `source` wins over
    the argument). Split-adjusted closes on every route; the dividend-adjusted
    close is `market.prices_adjusted`'s, from the same columns on every route."""
    bars = list(bars)
    cols: dict[str, list[Any]] = {name: [] for name in _PRICE_FIELDS}
    sources: list[str] = []
    for bar in bars:
        if isinstance(bar, Mapping):
            for name in _PRICE_FIELDS:
                cols[name].append(bar.get(name))
            sources.append(bar.get("source") or source)
        else:
            for name in _PRICE_FIELDS:
                cols[name].append(getattr(bar, name, None))
            sources.append(source)
    cols["source"] = sources
    cols["loaded_at"] = [utc_naive(loaded_at)] * len(bars)
    return _table(S.PRICES, cols, len(bars))


def history_prices_table(histories: Sequence[pa.Table], source: str, loaded_at: dt.datetime | None = None) -> pa.Table:
    """Histories already in columns (`fmp.records.History`): the source and load time added."""
    bars = pa.concat_tables(histories) if histories else BAR_COLUMNS.empty_table()
    n = bars.num_rows
    columns = {name: bars[name] for name in BAR_COLUMNS.names}
    columns["source"] = pa.array([source] * n, pa.string())
    columns["loaded_at"] = pa.array([utc_naive(loaded_at)] * n, pa.timestamp("us"))
    schema = S.PRICES.arrow_schema()
    return pa.Table.from_arrays([columns[f.name].cast(f.type) if f.name in columns else pa.nulls(n, f.type)
                                 for f in schema], schema=schema)


def quote_session_date(quote: Quote) -> dt.date:
    """The New York trading date of a quote's last update."""
    ts = quote.timestamp
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.timezone.utc)
    return ts.astimezone(NEW_YORK).date()


def quotes_as_prices(
    quotes: Iterable[Quote],
    day: dt.date,
    loaded_at: dt.datetime | None = None,
    *,
    require_same_day: bool = True,
) -> pa.Table:
    """A quote taken after the close stands for `day`'s bar: open=open,
    high=day_high, low=day_low, close=price, volume=volume,
    source 'batch-quote'.

    With `require_same_day` (default) a quote whose last update is not on `day`
    (New York time) is left out: the symbol did not trade that session, and its
    stale quote is not that day's bar.
    """
    kept = [q for q in quotes if not require_same_day or quote_session_date(q) == day]
    n = len(kept)
    cols = {
        "symbol": [q.symbol for q in kept],
        "date": [day] * n,
        "open": [q.open for q in kept],
        "high": [q.day_high for q in kept],
        "low": [q.day_low for q in kept],
        "close": [q.price for q in kept],
        "volume": [q.volume for q in kept],
        "source": [SOURCE_BATCH_QUOTE] * n,
        "loaded_at": [utc_naive(loaded_at)] * n,
    }
    return _table(S.PRICES, cols, n)


def dividends_table(
    divs: Iterable[Dividend],
    source: str,
    loaded_at: dt.datetime | None = None,
) -> pa.Table:
    divs = list(divs)
    names = [c for c in S.DIVIDENDS.column_names if c not in ("kind", "source", "loaded_at")]
    cols = _columns(divs, names)
    cols["kind"] = ["special" if d.frequency in S.SPECIAL_FREQUENCIES else "regular" for d in divs]
    cols["source"] = [source] * len(divs)
    cols["loaded_at"] = [utc_naive(loaded_at)] * len(divs)
    return _table(S.DIVIDENDS, cols, len(divs))


def splits_table(splits: Iterable[Split], loaded_at: dt.datetime | None = None) -> pa.Table:
    splits = list(splits)
    cols = _columns(splits, ["symbol", "date", "numerator", "denominator"])
    cols["loaded_at"] = [utc_naive(loaded_at)] * len(splits)
    return _table(S.SPLITS, cols, len(splits))


def symbol_changes_table(changes: Iterable[SymbolChange], loaded_at: dt.datetime | None = None) -> pa.Table:
    changes = list(changes)
    cols = _columns(changes, ["old_symbol", "new_symbol", "date", "company_name"])
    cols["loaded_at"] = [utc_naive(loaded_at)] * len(changes)
    return _table(S.SYMBOL_CHANGES, cols, len(changes))


def calendar_loads_table(endpoint: str, start: dt.date, end: dt.date) -> pa.Table:
    return _table(S.CALENDAR_LOADS, {"endpoint": [endpoint], "start_date": [start], "end_date": [end],
                                     "loaded_at": [utc_naive(None)]}, 1)


def bars_absent_table(day: dt.date, reasons: Mapping[str, str]) -> pa.Table:
    symbols = sorted(reasons)
    return _table(S.BARS_ABSENT, {"symbol": symbols, "date": [day] * len(symbols),
                                  "reason": [reasons[s] for s in symbols],
                                  "asked_at": [utc_naive(None)] * len(symbols)}, len(symbols))


def profiles_table(profiles: Iterable[Profile], fetched_at: dt.datetime | None = None) -> pa.Table:
    profiles = list(profiles)
    names = [c for c in S.COMPANY_PROFILES.column_names if c not in ("fetched_at", "screened_at", "screener_change")]
    cols = _columns(profiles, names)
    cols["fetched_at"] = [utc_naive(fetched_at)] * len(profiles)
    return _table(S.COMPANY_PROFILES, cols, len(profiles))


def raw_json(raw: Any) -> str:
    """A reject's raw payload as stable JSON text (sorted keys; odd values via str)."""
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", "replace")
    return json.dumps(raw, sort_keys=True, default=str, ensure_ascii=False)


def rejects_table(
    rejects: Iterable[Reject],
    run_id: str | None,
    rejected_at: dt.datetime | None = None,
) -> pa.Table:
    rejects = list(rejects)
    raws = [raw_json(r.raw) for r in rejects]
    cols = {
        "source": [r.source for r in rejects],
        "key": [r.key or "" for r in rejects],
        "reason": [r.reason for r in rejects],
        "raw_hash": [hashlib.sha256(t.encode()).hexdigest()[:32] for t in raws],
        "raw": raws,
        "run_id": [run_id] * len(rejects),
        "rejected_at": [utc_naive(rejected_at)] * len(rejects),
    }
    return _table(S.REJECTED_ROWS, cols, len(rejects))


def history_loads_table(
    dataset: str,
    symbols: Iterable[str],
    start: dt.date | None,
    end: dt.date | None,
    loaded_at: dt.datetime | None = None,
) -> pa.Table:
    if dataset not in ("prices", "dividends"):
        raise ValueError(f"dataset must be 'prices' or 'dividends', not {dataset!r}")
    symbols = list(dict.fromkeys(symbols))
    n = len(symbols)
    cols = {
        "dataset": [dataset] * n,
        "symbol": symbols,
        "start_date": [start] * n,
        "end_date": [end] * n,
        "loaded_at": [utc_naive(loaded_at)] * n,
    }
    return _table(S.HISTORY_LOADS, cols, n)
