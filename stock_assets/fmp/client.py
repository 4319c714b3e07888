"""`FMPResource`: the one door through which all FMP traffic passes.

Every call is paced by the key's shared limiter, retried when retrying can
help, accounted for, and parsed into validated records. The key travels only
in the `apikey` header.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import httpx
import pyarrow as pa
import pyarrow.compute as pc
from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from stock_assets.fmp import errors
from stock_assets.fmp.accounting import CallLog, CallRecord
from stock_assets.fmp.chunking import Chunk, ChunkSizer, fetch_chunks
from stock_assets.fmp.limiter import SharedRateLimiter, interval_rates, pace_rates
from stock_assets.fmp.plans import get_plan
from stock_assets.fmp.records import (
    Delisting, Dividend, EodBar, FMPRecord, HistoricalBar, History, Parsed, Profile, Quote, ScreenerRow,
    Reject, Split, StockListEntry, SymbolChange, parse_history, parse_rows)
from stock_assets.fmp.redaction import protect_secret, redact

DEFAULT_BASE_URL = "https://financialmodelingprep.com/stable"
HISTORY_ROW_CAP = 5000  # historical-price-eod/full drops the oldest rows past this
CALENDAR_ROW_CAP = 4000  # dividends-calendar drops the oldest dates past this

R = TypeVar("R", bound=FMPRecord)
T = TypeVar("T")
V = TypeVar("V")

logger = logging.getLogger("stock_assets.fmp")


class _Retry(Exception):
    """An attempt failed in a way another attempt may fix."""

    def __init__(self, outcome: str, message: str, status: int | None = None,
                 retry_after: float | None = None, min_wait: float = 0.0):
        super().__init__(message)
        self.outcome, self.status = outcome, status
        self.retry_after, self.min_wait = retry_after, min_wait


# The share of the plan's limit the client paces at. The per-second cap spreads the calls, so
# FMP's sliding minute sees what the limiter let out, give or take the latency's jitter:
# measured against the simulator's sliding minute (bench_client.py --fractions, 1 and 4
# processes, 60-100 ms latency), 0.9, 0.97, 0.98, 0.99 and 1.0 all drew no 429, and 0.99
# reached 0.986-0.988 of the limit, 1.0 no more (0.985-0.988). 0.99 keeps a margin for
# the key's other users and for clock skew at the same rate.
DEFAULT_PACE_FRACTION = 0.99


class FMPResource(ConfigurableResource):
    """Financial Modeling Prep's stable API, paced under the key's shared limit."""

    api_key: str = Field(repr=False, description="FMP API key (FMP_API_KEY). Sent as a header, never logged.")
    base_url: str = Field(default=DEFAULT_BASE_URL, description="API root (FMP_BASE_URL).")
    plan: str = Field(default="premium", description="starter, premium or ultimate (FMP_PLAN).")
    rate_limit_per_min: int | None = Field(default=None, description="Override of the plan's calls/min.")
    pace_fraction: float = Field(default=DEFAULT_PACE_FRACTION, description="Share of the limit to pace at.")
    max_in_flight: int = Field(default=16, description="Concurrent requests per process.")
    timeout_s: float = Field(default=30.0, description="Per-request timeout (connect, read, write).")
    max_retries: int = Field(default=6, description="Retries after the first attempt.")
    backoff_base_s: float = Field(default=0.5, description="First retry waits about this long, doubling.")
    backoff_max_s: float = Field(default=30.0, description="Longest wait between two attempts.")
    bulk_calls_per_min: float = Field(default=2.0, description="Pace of eod-bulk/profile-bulk: FMP throttles them hard.")
    quote_batch_size: int = Field(default=120, description="Symbols per batch-quote call (FMP answered 120 uncut).")
    limiter_state: str = Field(default="data/fmp-rate-limit.sqlite",
                               description="File (or redis:// URL) holding the shared limiter state.")
    chunk_target_s: float = Field(default=5.0, description="Adaptive chunks aim to take this long.")
    chunk_min: int = 10
    chunk_max: int = 2000

    _http: httpx.Client | None = PrivateAttr(default=None)
    _limiter: SharedRateLimiter | None = PrivateAttr(default=None)
    _bulk_limiter: SharedRateLimiter | None = PrivateAttr(default=None)
    _calls: CallLog = PrivateAttr(default_factory=CallLog)
    _init_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    # None, not logger.info: pydantic would bind a method default to the resource itself.
    _log: Callable[[str], None] | None = PrivateAttr(default=None)

    # ---- lifecycle -------------------------------------------------------
    def setup_for_execution(self, context: InitResourceContext) -> None:
        if context.log is not None:
            self._log = context.log.info
        self._ensure_started()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        with self._init_lock:
            for part in (self._http, self._limiter, self._bulk_limiter):
                if part is not None:
                    part.close()
            self._http = self._limiter = self._bulk_limiter = None

    @property
    def pace_per_min(self) -> float:
        limit = self.rate_limit_per_min or get_plan(self.plan).calls_per_min
        return limit * self.pace_fraction

    @property
    def calls(self) -> CallLog:
        """Every HTTP attempt this resource made (for metrics)."""
        return self._calls

    def _ensure_started(self) -> httpx.Client:
        with self._init_lock:
            if self._http is None:
                if not self.api_key:
                    raise errors.FMPAuthError("No FMP API key: set FMP_API_KEY (or run without it "
                                              "to use the built-in simulator).")
                protect_secret(self.api_key)
                get_plan(self.plan)  # fail early on a misspelt plan
                self._limiter = SharedRateLimiter(
                    pace_rates(self.pace_per_min), self.api_key, self.limiter_state, "calls")
                self._bulk_limiter = SharedRateLimiter(
                    interval_rates(self.bulk_calls_per_min), self.api_key, self.limiter_state, "bulk")
                self._http = httpx.Client(
                    base_url=self.base_url.rstrip("/") + "/",
                    headers={"apikey": self.api_key},
                    timeout=self.timeout_s,
                    limits=httpx.Limits(max_connections=self.max_in_flight,
                                        max_keepalive_connections=self.max_in_flight),
                )
            return self._http

    # ---- one call --------------------------------------------------------
    def _get(self, endpoint: str, params: dict[str, Any], read: Callable[[httpx.Response], T],
             *, bulk: bool = False) -> T:
        """One logical call: paced, retried, accounted. `read` turns a 200 into a value."""
        http = self._ensure_started()
        last: _Retry | None = None
        for attempt in range(self.max_retries + 1):
            if last is not None:
                time.sleep(self._backoff(attempt, last))
            waited = self._limiter.acquire()
            if bulk:
                waited += self._bulk_limiter.acquire()
            started, wall = time.monotonic(), time.time()
            size, status, outcome = 0, None, "ok"
            try:
                with http.stream("GET", endpoint, params=params) as response:
                    status = response.status_code
                    value, size = self._read(endpoint, response, read)
                return value
            except _Retry as retry:
                outcome, last = retry.outcome, retry
                status = retry.status or status
            except httpx.TimeoutException:
                outcome, last = "timeout", _Retry("timeout", f"no answer within {self.timeout_s:g}s")
            except (httpx.RemoteProtocolError, httpx.ReadError) as error:
                outcome, last = "truncated", _Retry("truncated", f"connection broke mid-answer ({type(error).__name__})")
            except httpx.TransportError as error:
                outcome, last = "connection", _Retry("connection", f"could not connect to {redact(self.base_url)} "
                                                     f"({type(error).__name__}): check FMP_BASE_URL and the network")
            except errors.FMPError as error:
                outcome = f"{error.status or 'error'}"
                raise
            finally:
                self._calls.add(CallRecord(endpoint, status, outcome, time.monotonic() - started,
                                           size, attempt, waited, wall))
        assert last is not None
        # FMP says "Limit Reach" with a 429, or with a 200 in place of a bulk file (its bulk throttle).
        kind = errors.FMPRateLimitError if last.outcome in ("429", "throttled") else errors.FMPTransientError
        raise kind(f"{endpoint} failed after {self.max_retries + 1} attempts: {redact(str(last))}",
                   endpoint=endpoint, status=last.status)

    def _read(self, endpoint: str, response: httpx.Response, read: Callable[[httpx.Response], T]) -> tuple[T, int]:
        status = response.status_code
        if status == 200:
            value = read(response)
            return value, response.num_bytes_downloaded
        body = response.read()
        message = _error_message(body)
        if status == 429:
            if "bandwidth" in message.lower():
                raise errors.FMPBandwidthError(
                    f"FMP's 30-day bandwidth cap is reached for this key ({endpoint}): retrying will not "
                    f"help; wait for the window to roll or upgrade the plan. FMP said: {message}",
                    endpoint=endpoint, status=status)
            raise _Retry("429", f"429 Limit Reach on {endpoint}", 429, _retry_after(response))
        if status >= 500:
            raise _Retry("5xx", f"{status} from FMP on {endpoint}", status, _retry_after(response))
        if status == 404:
            raise errors.FMPError(f"{endpoint} is not an FMP endpoint (404): check FMP_BASE_URL "
                                  f"({redact(self.base_url)}).", endpoint=endpoint, status=status)
        raise errors.error_for_status(status, endpoint, message)

    def _backoff(self, attempt: int, last: _Retry) -> float:
        if last.retry_after is not None:
            return min(last.retry_after, self.backoff_max_s * 4)
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        # Full jitter: processes that met the same 429 must not come back together.
        return max(last.min_wait, random.uniform(ceiling / 2, ceiling))

    # ---- body readers ----------------------------------------------------
    def _json_rows(self, endpoint: str) -> Callable[[httpx.Response], list[Any]]:
        def read(response: httpx.Response) -> list[Any]:
            body = response.read()
            try:
                data = json.loads(body)
            except ValueError:
                raise _Retry("malformed", f"malformed JSON from {endpoint} ({len(body)} bytes)", 200) from None
            _check_error_body(endpoint, data)
            if not isinstance(data, list):
                raise _Retry("malformed", f"{endpoint} answered {type(data).__name__}, not a list", 200)
            return data
        return read

    def _csv_rows(self, endpoint: str, keep: Callable[[str], bool] | None) -> Callable[[httpx.Response], list[dict]]:
        """Stream CSV line by line, parse by header name, keep only wanted symbols."""
        def read(response: httpx.Response) -> list[dict]:
            lines = _text_lines(response.iter_bytes())
            first = next(lines, "")
            if first.lstrip().startswith(("{", "[")):
                # The bulk throttle answers 200 with FMP's JSON error in place of CSV.
                data = _loads_or_none(first + "".join(lines))
                message = _error_message_of(data) or "JSON in place of CSV"
                if "limit reach" in message.lower():
                    raise _Retry("throttled", f"bulk throttle on {endpoint}", 200,
                                 min_wait=60.0 / self.bulk_calls_per_min)
                raise _Retry("malformed", f"{endpoint} answered JSON in place of CSV: {redact(message)}", 200)
            header = next(csv.reader([first]))
            rows = []
            for values in csv.reader(lines):
                if not values:
                    continue
                row = dict(zip(header, values))
                if len(values) != len(header):
                    row["__malformed__"] = f"{len(values)} fields for {len(header)} columns"
                if keep is None or keep(row.get("symbol", "")):
                    rows.append(row)
            return rows
        return read

    def _rows(self, endpoint: str, params: dict[str, Any]) -> list[Any]:
        return self._get(endpoint, params, self._json_rows(endpoint))

    # ---- endpoints -------------------------------------------------------
    def stock_list(self) -> Parsed[StockListEntry]:
        return parse_rows(StockListEntry, self._rows("stock-list", {}), "stock-list")

    def company_screener(self, exchange: str, *, limit: int = 10000, page: int = 0,
                         **filters: Any) -> Parsed[ScreenerRow]:
        params = {"exchange": exchange, "limit": limit, "page": page,
                  **{_camel(k): _param(v) for k, v in filters.items() if v is not None}}
        return parse_rows(ScreenerRow, self._rows("company-screener", params), "company-screener", exchange)

    def eod_bulk(self, day: dt.date, keep: Callable[[str], bool] | None = None) -> Parsed[EodBar]:
        rows = self._get("eod-bulk", {"date": day.isoformat()}, self._csv_rows("eod-bulk", keep), bulk=True)
        return _parse_csv(EodBar, rows, "eod-bulk", day.isoformat())

    def historical_prices(self, symbol: str, start: dt.date, end: dt.date) -> Parsed[HistoricalBar]:
        """One call: at most HISTORY_ROW_CAP rows, the newest ones."""
        params = {"symbol": symbol, "from": start.isoformat(), "to": end.isoformat()}
        rows = self._rows("historical-price-eod/full", params)
        return parse_rows(HistoricalBar, rows, "historical-price-eod/full", symbol)

    def price_history(self, symbol: str, start: dt.date, end: dt.date) -> History:
        """Every bar from start to end as columns, walking `to` backwards across the row cap."""
        pages: list[History] = []
        to = end
        while to >= start:
            params = {"symbol": symbol, "from": start.isoformat(), "to": to.isoformat()}
            page = parse_history(self._rows("historical-price-eod/full", params), "historical-price-eod/full",
                                 symbol)
            pages.append(page)
            if page.table.num_rows + len(page.rejects) < HISTORY_ROW_CAP or not page.table.num_rows:
                break
            to = pc.min(page.table["date"]).as_py() - dt.timedelta(days=1)
        return History(pa.concat_tables([p.table for p in pages]), [r for p in pages for r in p.rejects])

    def batch_quotes(self, symbols: Sequence[str]) -> Parsed[Quote]:
        rows = self._rows("batch-quote", {"symbols": ",".join(symbols)})
        wanted = set(symbols)
        # FMP echoes duplicates and may add nothing for unknown symbols: match by symbol.
        unique = {row.get("symbol"): row for row in rows if isinstance(row, dict) and row.get("symbol") in wanted}
        return parse_rows(Quote, unique.values(), "batch-quote")

    def dividends(self, symbol: str) -> Parsed[Dividend]:
        return parse_rows(Dividend, self._rows("dividends", {"symbol": symbol}), "dividends", symbol)

    def dividends_calendar(self, start: dt.date, end: dt.date) -> Parsed[Dividend]:
        """`at_cap` is set when FMP returned the row cap: the oldest dates were dropped."""
        rows = self._rows("dividends-calendar", {"from": start.isoformat(), "to": end.isoformat()})
        parsed = parse_rows(Dividend, rows, "dividends-calendar", f"{start}..{end}")
        parsed.at_cap = len(rows) >= CALENDAR_ROW_CAP
        return parsed

    def splits_calendar(self, start: dt.date, end: dt.date) -> Parsed[Split]:
        """Every symbol's splits with ex-date in [start, end]."""
        rows = self._rows("splits-calendar", {"from": start.isoformat(), "to": end.isoformat()})
        return parse_rows(Split, rows, "splits-calendar", f"{start}..{end}")

    def delisted_companies(self, page: int = 0, limit: int = 100) -> Parsed[Delisting]:
        """The most recently delisted companies, newest first, a page at a time."""
        rows = self._rows("delisted-companies", {"page": page, "limit": limit})
        return parse_rows(Delisting, rows, "delisted-companies", f"page {page}")

    def symbol_changes(self) -> Parsed[SymbolChange]:
        """The recent renames, newest first."""
        return parse_rows(SymbolChange, self._rows("symbol-change", {}), "symbol-change")

    def profile(self, symbol: str) -> Parsed[Profile]:
        return parse_rows(Profile, self._rows("profile", {"symbol": symbol}), "profile", symbol)

    def profile_bulk(self, part: int, keep: Callable[[str], bool] | None = None) -> Parsed[Profile] | None:
        """One part of the bulk profiles, or None past the last part (FMP answers 400)."""
        try:
            rows = self._get("profile-bulk", {"part": part}, self._csv_rows("profile-bulk", keep), bulk=True)
        except errors.FMPQueryError:
            return None
        return _parse_csv(Profile, rows, "profile-bulk", f"part {part}")

    # ---- many items --------------------------------------------------------
    def fetch_chunks(self, items: Sequence[T], fetch_one: Callable[[T], V], *, label: str,
                     log: Callable[[str], None] | None = None) -> Iterator[Chunk[T, V]]:
        """Fetch items concurrently under the shared limit; the results come in adaptive chunks."""
        self._ensure_started()
        sizer = ChunkSizer(target_s=self.chunk_target_s, min_size=self.chunk_min, max_size=self.chunk_max)
        return fetch_chunks(items, fetch_one, max_in_flight=self.max_in_flight, sizer=sizer, label=label,
                            log=log or self._log or logger.info)


# ---- helpers ---------------------------------------------------------------
def _text_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending = ""
    for chunk in chunks:
        pending += decoder.decode(chunk)
        *lines, pending = pending.split("\n")
        yield from (line.rstrip("\r") for line in lines)
    pending += decoder.decode(b"", final=True)
    if pending.strip():
        yield pending.rstrip("\r")


def _parse_csv(model: type[R], rows: list[dict], source: str, key: str) -> Parsed[R]:
    parsed: Parsed[R] = parse_rows(model, (r for r in rows if "__malformed__" not in r), source, key)
    parsed.rejects.extend(Reject(source, r.get("symbol") or key, r.pop("__malformed__"), r)
                          for r in rows if "__malformed__" in r)
    return parsed


def _loads_or_none(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _error_message_of(data: Any) -> str:
    if isinstance(data, dict):
        return str(data.get("Error Message") or data.get("message") or "")
    return ""


def _error_message(body: bytes) -> str:
    """FMP's error text: JSON `Error Message`, or the plain-text `Query Error` body."""
    data = _loads_or_none(body)
    text = _error_message_of(data) if data is not None else body.decode("utf-8", "replace").strip()
    return redact(text[:300])


def _check_error_body(endpoint: str, data: Any) -> None:
    """FMP may put an error on a 200: check every JSON body, whatever the status."""
    message = _error_message_of(data)
    if not message:
        return
    lowered = message.lower()
    if "bandwidth" in lowered:
        raise errors.FMPBandwidthError(
            f"FMP's bandwidth cap is reached ({endpoint}): wait for the window to roll or upgrade. "
            f"FMP said: {redact(message)}", endpoint=endpoint, status=200)
    if "limit reach" in lowered:
        raise _Retry("429", f"Limit Reach on a 200 from {endpoint}", 200)
    if "invalid api key" in lowered:
        raise errors.error_for_status(401, endpoint, redact(message))
    if any(word in lowered for word in ("restricted", "premium query", "special endpoint", "exclusive endpoint")):
        raise errors.error_for_status(402, endpoint, redact(message))
    raise errors.FMPError(f"FMP returned an error for {endpoint}: {redact(message)}", endpoint=endpoint, status=200)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _param(value: Any) -> Any:
    return str(value).lower() if isinstance(value, bool) else value
