"""Real syncs on the scale-out configuration, one host against two (not part of the test run).

    .venv/bin/python bench/bench_scale_out.py [--symbols 1500] [--only premium|latency]   # ~20 minutes

Everything as docs/deploy.md runs it (`stock_assets_tests/scale_out.py`): Debian's PostgreSQL and
Redis started here, Dagster's daemon, and Celery workers as "hosts", each with its own name and
folder, in a process tree of its own; the simulator in its own process. Each case is a first sync of
`--symbols` symbols, launched as the schedule launches it, on new databases, until its last run
ends; the instance admits as many runs at once as the hosts together execute (docs/deploy.md).
Figures come from the simulator's own request log, over the window in which the shard runs fetch
(from the first per-symbol call, a profile, dividends or a history, to the last):

1. At Premium's limit (750 calls a minute), 60-100 ms a call, hosts running 2 runs at once (as
   deployed): one host, then two. Accepted calls per second against the limit (the window's first
   10 s left out: the sliding minute fills), the busiest sliding minute, the 429 share.
   Goals: >= 0.97 of the limit each; never above it; <= 0.5% 429s.
2. The limit raised far above what the hosts reach (60,000 a minute) and 200 ms a call, each host
   one run at a time, so that a host's own fetch concurrency is the bound (as far as this machine's
   2 cores allow): two hosts' calls per second against one host's.     Goal: >= 1.8x.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402

from bench.bench_daily import FIRST_LOAD_AT, JITTER_MS, LATENCY_MS, PREMIUM  # noqa: E402
from bench.bench_sync import KEY, Simulator  # noqa: E402
from fmp_simulator import busiest_minute  # noqa: E402
from stock_assets_tests.scale_out import ScaleOut, scale_out_environment  # noqa: E402
from stock_assets_tests.servers import postgres_server, redis_server  # noqa: E402

PER_SYMBOL = ("profile", "dividends", "historical-price-eod/full")
RAISED = 60_000


def case(work: Path, servers, symbols: int, hosts: int, limit: int, latency_ms: float, jitter_ms: float,
         runs_per_host: int, warmup_s: float) -> dict:
    """One first sync on `hosts` Celery workers; its figures from the simulator's log."""
    work.mkdir()
    sim = Simulator(symbols, limit, latency_ms, jitter_ms, work / "requests.jsonl", plan="premium", now=FIRST_LOAD_AT)
    env = {**os.environ, "FMP_API_KEY": KEY, "FMP_BASE_URL": sim.base_url, "FMP_PLAN": "premium",
           "FMP_RATE_LIMIT_PER_MIN": str(limit), "STOCK_ASSETS_NOW": FIRST_LOAD_AT, "TZ": "UTC",
           **scale_out_environment(work, *servers, runs_at_once=hosts * runs_per_host)}
    os.environ.update(env)  # this process reads the instance as the hosts do
    platform = ScaleOut(work, env)
    started = time.monotonic()
    try:
        platform.start_sync("bench", tuple(f"host-{n}" for n in range(hosts)), concurrency=runs_per_host)
        with dg.DagsterInstance.get() as instance:
            runs = platform.wait_for_the_sync(instance, "bench", quiet_s=10.0, timeout_s=3600)
        wall = time.monotonic() - started
        log = sim.requests()
    finally:
        platform.stop()
        sim.stop()
    failed = [r.job_name for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
    if failed:
        raise SystemExit(f"runs failed in {work}: {failed}")
    fetching = [e["t"] for e in log if e["path"] in PER_SYMBOL]
    lo, hi = min(fetching) + warmup_s, max(fetching)
    accepted = [e for e in log if lo <= e["t"] <= hi and e["status"] != 429]
    limited = sum(e["status"] == 429 for e in log)
    return {"hosts": hosts, "wall_s": wall, "runs": len(runs), "calls": len(log), "window_s": hi - lo,
            "rate": len(accepted) / (hi - lo), "of_limit": len(accepted) / (hi - lo) / (limit / 60),
            "busiest_minute": busiest_minute(log), "429": limited, "429_share": limited / len(log)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=1500)
    parser.add_argument("--only", choices=("premium", "latency"), help="one of the two parts")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-out-"))
    print(f"Real first syncs of {args.symbols} symbols on the scale-out configuration (work: {work})", flush=True)
    with postgres_server() as postgres, redis_server() as redis:
        if args.only != "latency":
            premium(work, (postgres, redis), args.symbols)
        if args.only != "premium":
            latency(work, (postgres, redis), args.symbols)


def premium(work: Path, servers, symbols: int) -> None:
    print(f"\n1. Premium's limit ({PREMIUM}/min), {LATENCY_MS:.0f} +/- {JITTER_MS:.0f} ms a call, 2 runs a host")
    print(f"{'hosts':>5}{'wall s':>8}{'runs':>6}{'calls':>7}{'window s':>10}{'calls/s':>9}{'of limit':>10}"
          f"{'busiest minute':>16}{'429s':>6}", flush=True)
    for hosts in (1, 2):
        row = case(work / f"premium-{hosts}", servers, symbols, hosts, PREMIUM, LATENCY_MS, JITTER_MS, 2, 10.0)
        print(f"{hosts:>5}{row['wall_s']:>8.1f}{row['runs']:>6}{row['calls']:>7}{row['window_s']:>10.1f}"
              f"{row['rate']:>9.2f}{row['of_limit']:>10.3f}{row['busiest_minute']:>11} / {PREMIUM}"
              f"{row['429']:>6}", flush=True)


def latency(work: Path, servers, symbols: int) -> None:
    print(f"\n2. Limit {RAISED:,}/min, 200 ms a call, 1 run a host")
    print(f"{'hosts':>5}{'wall s':>8}{'runs':>6}{'calls':>7}{'window s':>10}{'calls/s':>9}", flush=True)
    rates = {}
    for hosts in (1, 2):
        row = case(work / f"latency-{hosts}", servers, symbols, hosts, RAISED, 200.0, 0.0, 1, 0.0)
        rates[hosts] = row["rate"]
        print(f"{hosts:>5}{row['wall_s']:>8.1f}{row['runs']:>6}{row['calls']:>7}{row['window_s']:>10.1f}"
              f"{row['rate']:>9.2f}", flush=True)
    print(f"two hosts / one host: {rates[2] / rates[1]:.2f}x (goal >= 1.8x)")

if __name__ == "__main__":
    main()
