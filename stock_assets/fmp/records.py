"""Validated FMP records, in the project's snake_case.

FMP's JSON and CSV are loose: `""` and null both mean "no value", integers
arrive as floats or in exponent form (`2.9909012e7`), numbers arrive as
strings (`fullTimeEmployees`), booleans as `"true"` in CSV. Each model coerces
those once, here, so nothing downstream has to care. A row that still cannot
be validated becomes a `Reject` with its reason and raw payload.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Iterable, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel


def _to_int(value: Any) -> Any:
    """Integral values may come as floats, exponent strings or fractional volumes."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float, str)):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"not a finite number: {value!r}")
        return int(round(number))
    return value


def _to_str(value: Any) -> Any:
    """Identifiers such as `cik` and `zip` must stay text even if FMP sends numbers."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


Int = Annotated[int | None, BeforeValidator(_to_int)]
Text = Annotated[str | None, BeforeValidator(_to_str)]


class FMPRecord(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _blank_means_none(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: (None if v == "" else v) for k, v in data.items()}
        return data


class StockListEntry(FMPRecord):
    symbol: str
    company_name: str | None = None


class ScreenerRow(FMPRecord):
    symbol: str
    company_name: str | None = None
    market_cap: float | None = None
    sector: str | None = None
    industry: str | None = None
    beta: float | None = None
    price: float | None = None
    last_annual_dividend: float | None = None
    volume: Int = None
    exchange: str | None = None
    exchange_short_name: str | None = None
    country: str | None = None
    is_etf: bool | None = None
    is_fund: bool | None = None
    is_actively_trading: bool | None = None


class Bar(FMPRecord):
    """What every end-of-day price row has."""

    symbol: str
    date: dt.date
    open: float
    high: float
    low: float
    close: float
    volume: Int = None


class EodBar(Bar):
    """One row of `eod-bulk` (CSV): the only price shape that carries adjClose."""

    adj_close: float | None = None


class HistoricalBar(Bar):
    """One row of `historical-price-eod/full` (split-adjusted, no adjClose)."""

    change: float | None = None
    change_percent: float | None = None
    vwap: float | None = None


class Quote(FMPRecord):
    symbol: str
    name: str | None = None
    price: float
    change_percentage: float | None = None
    change: float | None = None
    volume: Int = None
    day_low: float | None = None
    day_high: float | None = None
    year_high: float | None = None
    year_low: float | None = None
    market_cap: float | None = None
    price_avg50: float | None = None
    price_avg200: float | None = None
    exchange: str | None = None
    open: float | None = None
    previous_close: float | None = None
    timestamp: dt.datetime  # FMP sends Unix seconds; pydantic makes it an aware UTC datetime


class Dividend(FMPRecord):
    symbol: str
    ex_date: dt.date = Field(alias="date")
    record_date: dt.date | None = None
    payment_date: dt.date | None = None
    declaration_date: dt.date | None = None
    adj_dividend: float | None = None
    dividend: float | None = None
    yield_pct: float | None = Field(default=None, alias="yield")  # percent: 0.34 means 0.34%
    frequency: str | None = None


class Split(FMPRecord):
    """A split on its ex-date: 2 and 1 for a 2-for-1 split, 1 and 10 for a 1-for-10 reverse split."""

    symbol: str
    date: dt.date
    numerator: float = Field(gt=0)
    denominator: float = Field(gt=0)


class Delisting(FMPRecord):
    symbol: str
    company_name: str | None = None
    exchange: str | None = None
    delisted_date: dt.date | None = None


class SymbolChange(FMPRecord):
    """A rename (FB -> META): from `date` the company trades, and FMP serves its history, as `new_symbol`."""

    date: dt.date
    company_name: str | None = None
    old_symbol: str
    new_symbol: str


class Profile(FMPRecord):
    symbol: str
    price: float | None = None
    market_cap: float | None = None
    beta: float | None = None
    last_dividend: float | None = None
    price_range: str | None = Field(default=None, alias="range")
    change: float | None = None
    change_percentage: float | None = None
    volume: Int = None
    average_volume: Int = None
    company_name: str | None = None
    currency: str | None = None
    cik: Text = None
    isin: Text = None
    cusip: Text = None
    exchange_full_name: str | None = None
    exchange: str | None = None
    industry: str | None = None
    website: str | None = None
    description: str | None = None
    ceo: str | None = None
    sector: str | None = None
    country: str | None = None
    full_time_employees: Int = None
    phone: Text = None
    address: str | None = None
    city: str | None = None
    state: str | None = None
    zip: Text = None
    image: str | None = None
    ipo_date: dt.date | None = None
    default_image: bool | None = None
    is_etf: bool | None = None
    is_actively_trading: bool | None = None
    is_adr: bool | None = None
    is_fund: bool | None = None


R = TypeVar("R", bound=FMPRecord)


@dataclass(frozen=True)
class Reject:
    """A row FMP sent that could not be validated: kept, never silently dropped."""

    source: str  # the endpoint
    key: str  # what the row was about (symbol, date, ...)
    reason: str
    raw: Any


@dataclass
class Parsed(Generic[R]):
    records: list[R] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    at_cap: bool = False  # the endpoint returned its row cap: rows may be missing

    def extend(self, other: "Parsed[R]") -> None:
        self.records.extend(other.records)
        self.rejects.extend(other.rejects)


def _reason(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in error.errors()
    )


def parse_rows(model: type[R], rows: Iterable[Any], source: str, key: str = "") -> Parsed[R]:
    """Validate each row; a bad row becomes a Reject and the batch goes on."""
    parsed: Parsed[R] = Parsed()
    for raw in rows:
        try:
            parsed.records.append(model.model_validate(raw))
        except ValidationError as error:
            row_key = raw.get("symbol") if isinstance(raw, dict) else None
            parsed.rejects.append(Reject(source, str(row_key or key), _reason(error), raw))
    return parsed


# -- price history as columns -----------------------------------------------------------

BAR_COLUMNS = pa.schema([("symbol", pa.string()), ("date", pa.date32()), ("open", pa.float64()),
                         ("high", pa.float64()), ("low", pa.float64()), ("close", pa.float64()),
                         ("volume", pa.int64())])
_REQUIRED = tuple(name for name, spec in HistoricalBar.model_fields.items() if spec.is_required())


@dataclass
class History:
    """A symbol's price history: its bars as one Arrow table (`BAR_COLUMNS`), and the rows rejected.

    A first load is millions of bars: as validated `HistoricalBar` records they cost ~21 ms of
    CPU a call (pydantic, then Arrow from the objects) and 1.45 KB a bar; as columns ~3 ms and
    a few dozen bytes (measured on a 1,305-bar answer). `records` is the table, alone in a list,
    so that chunks of histories are gathered like any other answer.
    """

    table: pa.Table
    rejects: list[Reject] = field(default_factory=list)

    @property
    def records(self) -> list[pa.Table]:
        return [self.table]


def parse_history(rows: list[Any], source: str, key: str) -> History:
    """The answer's bars as columns, checked as `HistoricalBar` would check them.

    Columns are built straight from the JSON when every row is clean (the usual case); a row
    that is not (a missing price, a number sent as text, a fractional volume) sends the whole
    answer through the row-by-row validation, which coerces what it can and rejects the rest.
    """
    try:
        return History(_clean_columns(rows))
    except (_NotClean, pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        parsed = parse_rows(HistoricalBar, rows, source, key)
        columns = {name: [getattr(bar, name) for bar in parsed.records] for name in BAR_COLUMNS.names}
        return History(pa.Table.from_pydict(columns, schema=BAR_COLUMNS), parsed.rejects)


class _NotClean(Exception):
    pass


def _clean_columns(rows: list[Any]) -> pa.Table:
    if not all(isinstance(row, dict) for row in rows):
        raise _NotClean
    arrays = {}
    for name, kind in zip(BAR_COLUMNS.names, BAR_COLUMNS.types):
        values = [row.get(name) for row in rows]
        if name == "date":
            arrays[name] = pa.array(values, pa.string()).cast(pa.date32())
        elif name == "volume":
            # Volumes come as floats now and then; whole ones are integers, others need the rounding rules.
            volume = pa.array(values, pa.float64())
            if pc.any(pc.not_equal(pc.floor(volume), volume)).as_py():
                raise _NotClean
            arrays[name] = volume.cast(pa.int64())
        else:
            arrays[name] = pa.array(values, kind)
        if name in _REQUIRED and arrays[name].null_count:
            raise _NotClean
    if pc.any(pc.equal(arrays["symbol"], "")).as_py():  # blank means none: not a clean row
        raise _NotClean
    return pa.Table.from_pydict(arrays, schema=BAR_COLUMNS)
