"""Running the simulator: in a background thread (``SimulatorServer``), blocking
(``serve``), and the command-line options (``add_arguments`` / ``config_from_args``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import threading
import time
from datetime import date, datetime

import uvicorn

from .app import SimState, build_app
from .config import BadDays, Faults, SimConfig
from .truth import GroundTruth

log = logging.getLogger(__name__)


def _uvicorn_config(app, host: str, port: int) -> uvicorn.Config:
    # access_log off: query-string keys would otherwise land in the log.
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                          loop="asyncio", timeout_keep_alive=30, server_header=False, date_header=True)


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit TCP_NODELAY (Linux): without it, uvicorn's separate
    # header and body writes meet the client's delayed ACK (~40 ms per response).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class SimulatorServer:
    """The FMP simulator on a loopback port, served by uvicorn in a background thread.

    ``with SimulatorServer(cfg) as sim: httpx.get(sim.base_url + "/profile", ...)``
    """

    def __init__(self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.config = config or SimConfig()
        self.host = host
        self.port = port
        self.state = SimState(self.config)
        self.app = build_app(self.state)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> "SimulatorServer":
        if self._thread is not None:
            return self
        sock = _listen(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(_uvicorn_config(self.app, self.host, self.port))

        def run() -> None:
            try:
                asyncio.run(self._server.serve(sockets=[sock]))
            except BaseException as exc:  # pragma: no cover - surfaced by start()
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"fmp-simulator:{self.port}", daemon=True)
        self._thread.start()
        _warm_in_background(self.state)
        deadline = time.monotonic() + 30
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"FMP simulator failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("FMP simulator did not start within 30 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._thread = None

    def __enter__(self) -> "SimulatorServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- accessors --------------------------------------------------------------
    @property
    def root_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/stable"

    @property
    def control_url(self) -> str:
        return self.root_url + "/_sim"

    @property
    def faults(self) -> Faults:
        return self.state.faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self.state.faults.update({k: v for k, v in value.to_dict().items()})

    @property
    def truth(self) -> GroundTruth:
        return self.state.truth

    def requests(self, path: str | None = None) -> list[dict]:
        return self.state.log.list(path)

    def settled_requests(self, path: str | None = None, *, at_least: int = 0, quiet_s: float = 0.2,
                         timeout_s: float = 15.0) -> list[dict]:
        """The request log once it holds `at_least` entries and nothing was added for `quiet_s`.

        An entry lands as its response completes (a stalled one only when its
        stall ends), which can be just after the client has what it needed.
        """
        deadline = time.monotonic() + timeout_s
        log, stable_since = self.requests(path), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = self.requests(path)
            if len(now) != len(log):
                log, stable_since = now, time.monotonic()
            elif len(log) >= at_least and time.monotonic() - stable_since >= quiet_s:
                break
        return log

    def clear_requests(self) -> None:
        self.state.log.clear()

    def reset_limits(self) -> None:
        """Forget the per-minute windows and bulk throttle timestamps."""
        self.state.limiter.reset()
        with self.state._bulk_lock:
            self.state._bulk_last.clear()


def _warm_in_background(state: SimState) -> None:
    def warm() -> None:
        try:
            state.truth.warm()
        except Exception:  # pragma: no cover - warming is an optimisation only
            log.exception("FMP simulator: warming caches failed")

    threading.Thread(target=warm, name="fmp-simulator-warm", daemon=True).start()


def serve(config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the simulator in the foreground until interrupted (Ctrl-C)."""
    config = config or SimConfig()
    t0 = time.monotonic()
    state = SimState(config)
    app = build_app(state)
    shown = f"[{host}]" if ":" in host else host
    print(
        f"FMP simulator: http://{shown}:{port}/stable  (plan {config.plan}, {config.n_symbols} symbols, "
        f"seed {config.seed}, {len(config.api_keys)} API key(s), last closed session "
        f"{state.truth.last_closed_session()}, ready in {time.monotonic() - t0:.1f} s; control at /_sim)",
        flush=True,
    )
    sock = _listen(host, port)
    _warm_in_background(state)
    try:
        uvicorn.Server(_uvicorn_config(app, host, port)).run(sockets=[sock])
    finally:
        sock.close()


# ----------------------------------------------------------------------------- CLI
def _symbols_arg(raw: str | None) -> frozenset[str]:
    return frozenset(s.strip().upper() for s in (raw or "").split(",") if s.strip())


def _date_arg(raw: str) -> date:
    return date.fromisoformat(raw)


def _now_arg(raw: str) -> datetime:
    return datetime.fromisoformat(raw)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``stock-assets simulate``."""
    g = parser.add_argument_group("simulator")
    g.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")
    g.add_argument("--plan", default="premium", choices=["starter", "premium", "ultimate"], help="FMP plan to imitate")
    g.add_argument("--symbols", type=int, default=19205, dest="n_symbols", help="US symbols in the universe (default 19205)")
    g.add_argument("--seed", type=int, default=7, help="data seed (default 7)")
    g.add_argument("--api-key", action="append", dest="api_keys", metavar="KEY",
                   help="accepted API key (repeatable; default: a single key 'demo')")
    g.add_argument("--rate-limit-per-min", type=int, default=None, help="override the plan's calls per minute")
    g.add_argument("--bulk-min-interval-s", type=float, default=20.0, help="bulk throttle: min seconds between bulk calls per key and endpoint")
    g.add_argument("--no-batch-quote", action="store_true", help="answer batch-quote with 402 (exercise fallbacks)")
    g.add_argument("--data-start", type=_date_arg, default=date(1990, 1, 2), help="first day of price data (default 1990-01-02)")
    g.add_argument("--now", type=_now_arg, default=None, help="freeze the clock at this ISO datetime (America/New_York if naive)")
    g.add_argument("--profile-bulk-part-size", type=int, default=5000, help="rows per profile-bulk part")
    g.add_argument("--request-log", default=None, metavar="FILE", help="append the request log as JSON lines to FILE")
    b = parser.add_argument_group("bad days", "FMP's ordinary bad days (fmp-api-facts.md), on at realistic rates by default")
    b.add_argument("--no-bad-days", action="store_true", help="serve none of them (every rate zero)")
    b.add_argument("--bad-day", action="append", default=[], metavar="NAME=VALUE", dest="bad_day",
                   help=f"set one BadDays field (repeatable), one of: {', '.join(BadDays().to_dict())}")
    f = parser.add_argument_group("faults")
    f.add_argument("--latency-ms", type=float, default=0.0, help="base latency per request")
    f.add_argument("--latency-jitter-ms", type=float, default=0.0, help="uniform extra latency in [0, jitter]")
    f.add_argument("--slow-tail-p", type=float, default=0.0, help="probability a request is slowed by --slow-tail-factor")
    f.add_argument("--slow-tail-factor", type=float, default=10.0)
    f.add_argument("--slow-symbols", default=None, metavar="A,B", help="symbols whose requests are always slow")
    f.add_argument("--slow-symbol-factor", type=float, default=10.0)
    f.add_argument("--error-rate", type=float, default=0.0, help="probability of a 500/502/503")
    f.add_argument("--stall-p", type=float, default=0.0, help="probability of a stall (--stall-s, then an answer)")
    f.add_argument("--stall-s", type=float, default=30.0)
    f.add_argument("--reset-p", type=float, default=0.0, help="probability the connection is reset without a response")
    f.add_argument("--truncate-p", type=float, default=0.0, help="probability the body is cut off mid-way")
    f.add_argument("--malformed-p", type=float, default=0.0, help="probability of a 200 with a broken body")
    f.add_argument("--limit-reach-p", type=float, default=0.0,
                   help="probability of a 429 Limit Reach regardless of the real count (a 429 storm)")
    f.add_argument("--failing-symbols", default=None, metavar="A,B", help="symbols that always answer 500 on per-symbol endpoints")


def config_from_args(args: argparse.Namespace) -> tuple[SimConfig, str, int]:
    faults = Faults(
        latency_s=args.latency_ms / 1000.0, latency_jitter_s=args.latency_jitter_ms / 1000.0,
        slow_tail_p=args.slow_tail_p, slow_tail_factor=args.slow_tail_factor,
        slow_symbols=_symbols_arg(args.slow_symbols), slow_symbol_factor=args.slow_symbol_factor,
        error_rate=args.error_rate, stall_p=args.stall_p, stall_s=args.stall_s, reset_p=args.reset_p,
        truncate_p=args.truncate_p, malformed_p=args.malformed_p,
        limit_reach_p=args.limit_reach_p, failing_symbols=_symbols_arg(args.failing_symbols),
    )
    bad_days = BadDays.off() if args.no_bad_days else BadDays()
    for item in args.bad_day:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--bad-day expects NAME=VALUE, got {item!r}")
        try:
            bad_days.update({name.strip(): value.strip()})
        except (KeyError, ValueError) as exc:
            raise SystemExit(f"--bad-day {item!r}: {exc}") from None
    cfg = SimConfig(
        seed=args.seed, n_symbols=args.n_symbols, plan=args.plan, api_keys=tuple(args.api_keys or ("demo",)),
        rate_limit_per_min=args.rate_limit_per_min, bulk_min_interval_s=args.bulk_min_interval_s,
        batch_quote_served=not args.no_batch_quote, data_start=args.data_start, now=args.now, faults=faults,
        request_log_path=args.request_log, profile_bulk_part_size=args.profile_bulk_part_size, bad_days=bad_days,
    )
    return cfg, args.host, args.port


def main(argv: list[str] | None = None) -> None:
    """``python -m fmp_simulator``: the same options as ``stock-assets simulate``."""
    parser = argparse.ArgumentParser(prog="python -m fmp_simulator", description="Serve the FMP simulator.")
    add_arguments(parser)
    cfg, host, port = config_from_args(parser.parse_args(argv))
    serve(cfg, host, port)
