"""Fault injection for ``/stable/`` data paths.

Per request, in order: latency (base + uniform jitter; times ``slow_tail_factor``
with probability ``slow_tail_p``; times ``slow_symbol_factor`` when the request
names a slow symbol -- multipliers apply to ``max(latency, 0.1 s)`` so they bite
even without a base latency); then ``failing_symbols`` (500 on ``symbol=``
endpoints); then one draw picks at most one of stall / reset / truncate /
malformed / 5xx with the configured probabilities (their sum should be <= 1).

* stall: sleep ``stall_s`` more, then answer normally (a client timeout fires first).
* reset: the TCP connection is aborted with SO_LINGER=0 before any byte is sent,
  so the client sees a reset / "server disconnected without sending a response".
  (We reach uvicorn's transport through the ``send`` callable's owner; when that is
  not available we raise inside the app, which makes uvicorn close the socket.)
* truncate: the real response is produced, its headers sent (Content-Length kept
  for JSON; chunked CSV stays chunked), then half the body, then the connection is
  closed (FIN): the client sees an incomplete read (httpx ``RemoteProtocolError``).
* malformed: 200 with the body cut in half plus garbage (invalid JSON; for CSV a
  broken row is inserted), with a correct Content-Length.
* 5xx: 500 (JSON error), 502 or 503 (HTML, as a proxy would send).
* limit_reach: 429 with FMP's `Limit Reach` body and no Retry-After (a 429 storm).
Randomness comes from ``random.Random(seed)``.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from typing import Any

from .config import Faults

LIMIT_REACH_BODY = (b'{"Error Message": "Limit Reach . Please upgrade your plan or visit our '
                    b'documentation for more details at https://site.financialmodelingprep.com/"}')
_PER_SYMBOL = ("historical-price-eod/full", "dividends", "profile")
_MIN_SLOW_BASE_S = 0.1


class _Dropped(Exception):
    """Raised to make uvicorn close the connection when the transport is unreachable."""


def drop_connection(send, hard: bool = True) -> None:
    """Close the client's connection now: ``hard`` = TCP reset (SO_LINGER 0, abort),
    otherwise flush what was written and close (FIN), leaving the response incomplete."""
    raw = getattr(send, "raw_send", send)
    cycle = getattr(raw, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise _Dropped("connection dropped by fault injection")
    if hard:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        transport.abort()
    else:
        transport.close()
    try:
        cycle.disconnected = True  # uvicorn: do not try to send a 500 afterwards
    except AttributeError:
        pass


class FaultInjector:
    def __init__(self, faults: Faults, seed: int):
        self.faults = faults
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def decide(self, endpoint: str, params: dict[str, str]) -> tuple[float, str | None]:
        """(latency seconds, fault name or None) for one request."""
        f = self.faults
        syms = {s.strip().upper() for s in (params.get("symbol", "") + "," + params.get("symbols", "")).split(",") if s.strip()}
        with self._lock:
            r = self._rng
            lat = f.latency_s + (r.uniform(0.0, f.latency_jitter_s) if f.latency_jitter_s > 0 else 0.0)
            if f.slow_tail_p > 0 and r.random() < f.slow_tail_p:
                lat = max(lat, _MIN_SLOW_BASE_S) * f.slow_tail_factor
            if f.slow_symbols and syms & f.slow_symbols:
                lat = max(lat, _MIN_SLOW_BASE_S) * f.slow_symbol_factor
            if endpoint in _PER_SYMBOL and f.failing_symbols and syms & f.failing_symbols:
                return lat, "failing_symbol"
            x = r.random()
            for name, p in (("stall", f.stall_p), ("reset", f.reset_p), ("truncate", f.truncate_p),
                            ("malformed", f.malformed_p), ("error", f.error_rate),
                            ("limit_reach", f.limit_reach_p)):
                if p > 0 and x < p:
                    if name == "error":
                        return lat, r.choice(("error_500", "error_502", "error_503"))
                    return lat, name
                x -= p
        return lat, None

    async def run(self, scope, receive, send, app, endpoint: str, params: dict[str, str], rec: dict[str, Any]) -> None:
        lat, fault = self.decide(endpoint, params)
        rec["fault"] = fault
        if lat > 0:
            await asyncio.sleep(lat)
        if fault is None:
            await app(scope, receive, send)
        elif fault == "stall":
            await asyncio.sleep(self.faults.stall_s)
            await app(scope, receive, send)
        elif fault == "reset":
            drop_connection(send)
        elif fault in ("failing_symbol", "error_500"):
            await _send(send, 500, b'{"Error Message":"Internal Server Error"}', b"application/json;charset=UTF-8")
        elif fault == "limit_reach":
            await _send(send, 429, LIMIT_REACH_BODY, b"application/json;charset=UTF-8")
        elif fault == "error_502":
            await _send(send, 502, b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>", b"text/html")
        elif fault == "error_503":
            await _send(send, 503, b"<html><head><title>503 Service Temporarily Unavailable</title></head><body><center><h1>503 Service Temporarily Unavailable</h1></center></body></html>", b"text/html")
        elif fault in ("truncate", "malformed"):
            start, body = await _capture(app, scope, receive)
            if fault == "malformed":
                body = _malform(body, _content_type(start))
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"transfer-encoding")]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({"type": "http.response.start", "status": start["status"], "headers": headers})
                await send({"type": "http.response.body", "body": body, "more_body": False})
            else:
                await send(start)
                await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
                drop_connection(send, hard=False)


async def _send(send, status: int, body: bytes, ctype: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _capture(app, scope, receive) -> tuple[dict, bytes]:
    start: dict = {}
    chunks: list[bytes] = []

    async def grab(message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, grab)
    return start, b"".join(chunks)


def _content_type(start: dict) -> bytes:
    for k, v in start.get("headers", []):
        if k.lower() == b"content-type":
            return v
    return b""


def _malform(body: bytes, ctype: bytes) -> bytes:
    if b"csv" in ctype:
        lines = body.split(b"\n")
        mid = max(1, len(lines) // 2)
        return b"\n".join(lines[:mid] + [b'"BROKEN","2024-0'] + lines[mid:])
    return body[: len(body) // 2] + b'"},{"sym'
