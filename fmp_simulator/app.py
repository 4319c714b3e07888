"""The simulator's ASGI application: FMP's ``/stable/`` routes, auth, plan gating,
per-minute limit, bulk throttle, the ``/_sim/`` control API, and (as an outer
raw-ASGI layer) fault injection and the request log."""

from __future__ import annotations

import collections
import hashlib
import json
import re
import threading
import time
from datetime import date
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .config import SimConfig
from .faults import FaultInjector
from .truth import ExpFloat, GroundTruth, exp_str

MSG_INVALID_KEY = (
    "Invalid API KEY. Feel free to create a Free API Key or visit "
    "https://site.financialmodelingprep.com/faqs?search=why-is-my-api-key-invalid for more information."
)
MSG_RESTRICTED = (
    "Restricted Endpoint: This endpoint is not available under your current subscription please visit our "
    "subscription page to upgrade your plan at https://site.financialmodelingprep.com/developer/docs/pricing"
)
MSG_LIMIT = (
    "Limit Reach . Please upgrade your plan or visit our documentation for more details at "
    "https://site.financialmodelingprep.com/"
)
MSG_LEGACY = (
    "Legacy Endpoint : Due to Legacy endpoints being no longer supported - This endpoint is only available for "
    "legacy users who have valid subscriptions prior August 31, 2025. Please visit our subscription page to "
    "upgrade your plan or read our documentation at https://site.financialmodelingprep.com/developer/docs/stable"
)

EOD_BULK_HEADER = '"symbol","date","open","low","high","close","adjClose","volume"\n'
PROFILE_FIELDS = (
    "symbol", "price", "marketCap", "beta", "lastDividend", "range", "change", "changePercentage", "volume",
    "averageVolume", "companyName", "currency", "cik", "isin", "cusip", "exchangeFullName", "exchange", "industry",
    "website", "description", "ceo", "sector", "country", "fullTimeEmployees", "phone", "address", "city", "state",
    "zip", "image", "ipoDate", "defaultImage", "isEtf", "isActivelyTrading", "isAdr", "isFund",
)
ENDPOINTS = (
    "company-screener", "stock-list", "eod-bulk", "historical-price-eod/full", "batch-quote", "dividends",
    "dividends-calendar", "profile", "profile-bulk",
)
BULK = ("eod-bulk", "profile-bulk")
PER_SYMBOL = ("historical-price-eod/full", "dividends", "profile")
JSON_CT = "application/json;charset=UTF-8"


def key_id(key: str | None) -> str | None:
    """A short, non-reversible id of an API key (the key itself is never logged)."""
    if not key:
        return None
    return hashlib.sha256(key.encode()).hexdigest()[:10]


# ----------------------------------------------------------------------------- encoding
_EXP_RE = re.compile(r'"@@EXP@@([^@"]+)@@"')


def encode_json(obj: Any, scan_exp: bool = False) -> bytes:
    """Compact JSON; with ``scan_exp`` ExpFloat values are written in exponent form."""
    if scan_exp and isinstance(obj, list):
        used = False
        out = []
        for r in obj:
            if any(type(v) is ExpFloat for v in r.values()):
                used = True
                r = {k: (f"@@EXP@@{exp_str(v)}@@" if type(v) is ExpFloat else v) for k, v in r.items()}
            out.append(r)
        text = json.dumps(out, separators=(",", ":"))
        if used:
            text = _EXP_RE.sub(r"\1", text)
        return text.encode()
    return json.dumps(obj, separators=(",", ":")).encode()


def _num(v: Any) -> str:
    if v is None:
        return ""
    if type(v) is ExpFloat:
        return exp_str(v)
    if v is True or v is False:
        return '"true"' if v else '"false"'
    if isinstance(v, str):
        return '"' + v.replace('"', '""') + '"'
    return repr(v)


def eod_bulk_csv(rows: list[tuple], chunk: int = 2000) -> Iterable[bytes]:
    yield EOD_BULK_HEADER.encode()
    for s in range(0, len(rows), chunk):
        parts = []
        for sym, d, o, lo, hi, c, a, v in rows[s:s + chunk]:
            parts.append(f'"{sym}","{d}",{_num(o)},{_num(lo)},{_num(hi)},{_num(c)},{_num(a)},{_num(v)}\n')
        yield "".join(parts).encode()


def profile_csv(rows: list[dict], chunk: int = 1000) -> Iterable[bytes]:
    yield (",".join(f'"{f}"' for f in PROFILE_FIELDS) + "\n").encode()
    for s in range(0, len(rows), chunk):
        yield "".join(",".join(_num(r[f]) for f in PROFILE_FIELDS) + "\n" for r in rows[s:s + chunk]).encode()


# ----------------------------------------------------------------------------- state
class RequestLog:
    """Thread-safe in-memory request log, optionally mirrored to a JSON-lines file."""

    def __init__(self, path: str | None = None, max_entries: int = 100_000):
        self._items: collections.deque = collections.deque(maxlen=max_entries)
        self._lock = threading.Lock()
        self.path = path

    def append(self, rec: dict) -> None:
        with self._lock:
            self._items.append(rec)
            if self.path:
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(rec) + "\n")

    def list(self, path: str | None = None) -> list[dict]:
        with self._lock:
            items = list(self._items)
        return [dict(r) for r in items if path is None or r["path"] == path]

    def clear(self) -> int:
        with self._lock:
            n = len(self._items)
            self._items.clear()
            return n


class SlidingWindowLimiter:
    """Per-key count of accepted requests over the last 60 s. Rejected (429)
    requests are not recorded, so they do not extend the penalty."""

    def __init__(self, limit_fn: Callable[[], int], window_s: float = 60.0):
        self.limit_fn = limit_fn
        self.window_s = window_s
        self._hits: dict[str, collections.deque] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._hits.setdefault(key, collections.deque())
            edge = now - self.window_s
            while q and q[0] <= edge:
                q.popleft()
            if len(q) >= self.limit_fn():
                return False
            q.append(now)
            return True

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


def busiest_minute(log: list[dict]) -> int:
    """The most accepted requests of a request log in any 60 s: what the sliding minute counted at worst."""
    times = sorted(e["t"] for e in log if e["status"] != 429)
    most, first = 0, 0
    for last, t in enumerate(times):
        while times[first] <= t - 60.0:
            first += 1
        most = max(most, last - first + 1)
    return most


class SimState:
    """Everything the app needs: config, ground truth, faults, log, limits."""

    def __init__(self, config: SimConfig, truth: GroundTruth | None = None):
        self.config = config
        self.truth = truth or GroundTruth(config)
        self.log = RequestLog(config.request_log_path)
        self.limiter = SlidingWindowLimiter(lambda: self.config.calls_per_min)
        self.injector = FaultInjector(config.faults, config.seed if config.fault_seed is None else config.fault_seed)
        self._bulk_last: dict[tuple[str, str], float] = {}
        self._bulk_lock = threading.Lock()
        self._stock_list: bytes | None = None

    @property
    def faults(self):
        return self.injector.faults

    def bulk_allowed(self, kid: str, endpoint: str) -> bool:
        now = time.monotonic()
        with self._bulk_lock:
            last = self._bulk_last.get((kid, endpoint))
            if last is not None and now - last < self.config.bulk_min_interval_s:
                return False
            self._bulk_last[(kid, endpoint)] = now
            return True

    def stock_list_bytes(self) -> bytes:
        if self._stock_list is None:
            self._stock_list = encode_json(self.truth.stock_list())
        return self._stock_list


def _spoil(rows: list[dict], field: str, value: Any) -> list[dict]:
    """The first row with one field FMP could plausibly garble: the client must reject it."""
    if not rows:
        return rows
    return [{**rows[0], field: value}, *rows[1:]]


# ----------------------------------------------------------------------------- responses
def fmp_error(status: int, message: str) -> Response:
    return Response(encode_json({"Error Message": message}), status_code=status, media_type=JSON_CT)


def query_error(param: str) -> Response:
    # FMP serves this plain text with a JSON content type.
    return Response(f"Query Error: Invalid or missing query parameter - {param}".encode(), status_code=400,
                    media_type=JSON_CT)


def json_rows(rows: Any, scan_exp: bool = False) -> Response:
    return Response(encode_json(rows, scan_exp), media_type=JSON_CT)


def _date_param(params, name: str) -> tuple[date | None, bool]:
    """(value, ok) for an optional YYYY-MM-DD parameter."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None, True
    try:
        return date.fromisoformat(raw.strip()), True
    except ValueError:
        return None, False


def _date_range(params) -> tuple[date | None, date | None, Response | None]:
    """`from` and `to`, or the 400 FMP gives for whichever is malformed."""
    start, start_ok = _date_param(params, "from")
    end, end_ok = _date_param(params, "to")
    if not start_ok:
        return None, None, query_error("from")
    if not end_ok:
        return None, None, query_error("to")
    return start, end, None


# ----------------------------------------------------------------------------- handlers
class Handlers:
    def __init__(self, state: SimState):
        self.s = state
        self.t = state.truth

    # company-screener: filters, paging, short pages and the limit cap live in the ground truth
    def screener(self, p) -> Response:
        try:
            served = self.t.screener_page(p)
        except ValueError:
            return query_error("limit")
        return json_rows(served["rows"], scan_exp=True)

    def stock_list(self, p) -> Response:
        return Response(self.s.stock_list_bytes(), media_type=JSON_CT)

    def eod_bulk(self, p) -> Response:
        d, ok = _date_param(p, "date")
        if d is None:
            return query_error("date")
        rows = self.t.bulk_rows(d)
        return StreamingResponse(eod_bulk_csv(rows), media_type="text/csv;charset=UTF-8")

    def history(self, p) -> Response:
        sym = (p.get("symbol") or "").strip()
        if not sym:
            return query_error("symbol")
        f, t, bad = _date_range(p)
        if bad:
            return bad
        if "," in sym:
            return json_rows([])
        body = self.t.eod_bars_json(sym.upper(), f, t)
        if sym.upper() in self.s.faults.invalid_row_symbols:
            return json_rows(_spoil(json.loads(body), "close", "N/A"))
        return Response(body, media_type=JSON_CT)

    def batch_quote(self, p) -> Response:
        raw = p.get("symbols") or ""
        syms = [s.strip().upper() for s in raw.split(",") if s.strip()]
        if not syms:
            return query_error("symbols")
        return json_rows(self.t.quotes(syms))

    def dividends(self, p) -> Response:
        sym = (p.get("symbol") or "").strip()
        if not sym:
            return query_error("symbol")
        rows = self.t.dividends(sym.upper()) if "," not in sym else []
        if sym.upper() in self.s.faults.invalid_row_symbols:
            rows = _spoil(rows, "date", "")
        return json_rows(rows)

    def dividends_calendar(self, p) -> Response:
        f, t, bad = _date_range(p)
        if bad:
            return bad
        last = self.t.last_closed_session()
        t = t or last
        f = f or date.fromordinal(t.toordinal() - 7)
        try:
            page = max(0, int(p.get("page") or 0))
        except ValueError:
            return query_error("page")
        return json_rows(self.t.dividends_calendar_served(f, t, page))

    def profile(self, p) -> Response:
        sym = (p.get("symbol") or "").strip()
        if not sym:
            return query_error("symbol")
        row = self.t.profile(sym.upper()) if "," not in sym else None
        rows = [row] if row else []
        if sym.upper() in self.s.faults.invalid_row_symbols:
            rows = _spoil(rows, "ipoDate", "soon")
        return json_rows(rows, scan_exp=True)

    def profile_bulk(self, p) -> Response:
        raw = p.get("part")
        try:
            part = int(raw)
        except (TypeError, ValueError):
            return query_error("part")
        rows = self.t.profile_bulk_part(part)
        if rows is None:
            return query_error("part")
        return StreamingResponse(profile_csv(rows), media_type="text/csv;charset=UTF-8")

    def _symbol_rows(self, p, rows_of) -> Response:
        """A per-symbol endpoint with optional from/to: `[]` for unknown or comma-separated symbols."""
        sym = (p.get("symbol") or "").strip()
        if not sym:
            return query_error("symbol")
        f, t, bad = _date_range(p)
        if bad:
            return bad
        return json_rows([] if "," in sym else rows_of(sym.upper(), f, t))

    def splits(self, p) -> Response:
        return self._symbol_rows(p, lambda sym, f, t: self.t.splits(sym))

    def splits_calendar(self, p) -> Response:
        f, t, bad = _date_range(p)
        if bad:
            return bad
        t = t or self.t.last_closed_session()
        return json_rows(self.t.splits_calendar(f or date.fromordinal(t.toordinal() - 30), t))

    def non_split_adjusted(self, p) -> Response:
        return self._symbol_rows(p, self.t.non_split_adjusted)

    def dividend_adjusted(self, p) -> Response:
        return self._symbol_rows(p, self.t.dividend_adjusted)

    def delisted_companies(self, p) -> Response:
        try:
            page, limit = max(0, int(p.get("page") or 0)), max(0, int(p.get("limit") or 100))
        except ValueError:
            return query_error("page")
        return json_rows(self.t.delisted_companies(page, limit))

    def symbol_change(self, p) -> Response:
        return json_rows(self.t.symbol_changes())

    def table(self) -> dict[str, Callable]:
        return {
            "company-screener": self.screener, "stock-list": self.stock_list, "eod-bulk": self.eod_bulk,
            "historical-price-eod/full": self.history, "batch-quote": self.batch_quote, "dividends": self.dividends,
            "dividends-calendar": self.dividends_calendar, "profile": self.profile, "profile-bulk": self.profile_bulk,
            "splits": self.splits, "splits-calendar": self.splits_calendar,
            "historical-price-eod/non-split-adjusted": self.non_split_adjusted,
            "historical-price-eod/dividend-adjusted": self.dividend_adjusted,
            "delisted-companies": self.delisted_companies, "symbol-change": self.symbol_change,
        }


def request_key(request: Request) -> str | None:
    return request.headers.get("apikey") or request.query_params.get("apikey")


def build_app(state: SimState) -> Callable:
    handlers = Handlers(state).table()
    cfg = state.config

    def gate(request: Request) -> tuple[Response | None, str | None]:
        key = request_key(request)
        if not key or key not in cfg.api_keys:
            return fmp_error(401, MSG_INVALID_KEY), None
        kid = key_id(key)
        if not state.limiter.allow(kid):
            return fmp_error(429, MSG_LIMIT), kid
        return None, kid

    async def stable(request: Request) -> Response:
        path = request.path_params["path"].strip("/")
        fn = handlers.get(path)
        if fn is None:
            return Response(b"[]", status_code=404, media_type=JSON_CT)
        denied, kid = gate(request)
        if denied is not None:
            return denied
        if not cfg.plan_obj.serves(path) or (path == "batch-quote" and not cfg.batch_quote_served):
            return fmp_error(402, MSG_RESTRICTED)
        if path in BULK and not state.bulk_allowed(kid, path):
            return Response(encode_json({"Error Message": MSG_LIMIT}), status_code=200, media_type=JSON_CT)
        params = {k: v for k, v in request.query_params.items() if k != "apikey"}
        return await run_in_threadpool(fn, params)

    async def legacy(request: Request) -> Response:
        denied, _ = gate(request)
        if denied is not None:
            return denied
        return fmp_error(403, MSG_LEGACY)

    async def not_found(request: Request) -> Response:
        return Response(b"[]", status_code=404, media_type=JSON_CT)

    # ---- control API
    async def health(request: Request) -> Response:
        t = state.truth
        return JSONResponse({
            "status": "ok", "plan": cfg.plan, "n_symbols": cfg.n_symbols, "seed": cfg.seed,
            "calls_per_min": cfg.calls_per_min, "bulk_min_interval_s": cfg.bulk_min_interval_s,
            "batch_quote_served": cfg.batch_quote_served, "bad_days": cfg.bad_days.to_dict(),
            "last_closed_session": t.last_closed_session().isoformat(), "now": t.now().isoformat(),
        })

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                body = await request.json()
                if not isinstance(body, dict):
                    raise ValueError("expected a JSON object")
                if body.pop("reset", False):
                    state.faults.reset()
                state.faults.update(body)
            except (KeyError, ValueError, TypeError) as exc:
                return JSONResponse({"error": f"bad fault settings: {exc}"}, status_code=400)
        return JSONResponse(state.faults.to_dict())

    async def requests_(request: Request) -> Response:
        if request.method == "DELETE":
            return JSONResponse({"cleared": state.log.clear()})
        return JSONResponse(state.log.list(request.query_params.get("path")))

    async def sim_config(request: Request) -> Response:
        """Runtime knobs beyond faults: ``bulk_min_interval_s``, ``rate_limit_per_min``,
        ``batch_quote_served``; ``{"reset_limits": true}`` forgets the windows."""
        if request.method == "POST":
            body = await request.json()
            for name in ("bulk_min_interval_s", "rate_limit_per_min", "batch_quote_served"):
                if name in body:
                    setattr(cfg, name, body[name])
            if body.get("reset_limits"):
                state.limiter.reset()
                with state._bulk_lock:
                    state._bulk_last.clear()
        return JSONResponse({"bulk_min_interval_s": cfg.bulk_min_interval_s, "rate_limit_per_min": cfg.rate_limit_per_min,
                             "batch_quote_served": cfg.batch_quote_served, "plan": cfg.plan})

    routes = [
        Route("/_sim/health", health, methods=["GET"]),
        Route("/_sim/faults", faults, methods=["GET", "POST"]),
        Route("/_sim/requests", requests_, methods=["GET", "DELETE"]),
        Route("/_sim/config", sim_config, methods=["GET", "POST"]),
        Route("/stable/{path:path}", stable, methods=["GET"]),
        Route("/api/{path:path}", legacy, methods=["GET"]),
        Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "DELETE"]),
    ]
    inner = Starlette(routes=routes)
    return FaultAndLogMiddleware(inner, state)


class FaultAndLogMiddleware:
    """Outermost ASGI layer: logs every non-control request and injects faults on
    ``/stable/`` data paths (never on ``/_sim/``)."""

    def __init__(self, app: Callable, state: SimState):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sim"):
            await self.app(scope, receive, send)
            return
        t0 = time.time()
        path = scope["path"]
        rel = path[len("/stable/"):].strip("/") if path.startswith("/stable/") else path
        params: dict[str, str] = {}
        key = None
        for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
            if k == "apikey":
                key = key or v
            else:
                params[k] = v
        for hk, hv in scope.get("headers", []):
            if hk == b"apikey":
                key = hv.decode("latin-1")
                break
        rec: dict[str, Any] = {"t": t0, "path": rel, "params": params, "key_id": key_id(key), "status": None,
                               "bytes": 0, "duration_s": None, "fault": None}

        logged = False

        def log_once() -> None:
            nonlocal logged
            if not logged:
                logged = True
                rec["duration_s"] = round(time.time() - t0, 6)
                self.state.log.append(rec)

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                rec["status"] = message["status"]
            elif message["type"] == "http.response.body":
                rec["bytes"] += len(message.get("body", b""))
                if not message.get("more_body", False):
                    # Logged before the last byte leaves: a client that has its
                    # whole answer always finds the request in the log.
                    log_once()
            await send(message)

        # keep the raw server send reachable for dropping the connection
        counting_send.raw_send = send  # type: ignore[attr-defined]
        try:
            if path.startswith("/stable/") and rel in ENDPOINTS:
                await self.state.injector.run(scope, receive, counting_send, self.app, rel, params, rec)
            else:
                await self.app(scope, receive, counting_send)
        finally:
            log_once()  # answers cut short (resets, truncation) are logged here
