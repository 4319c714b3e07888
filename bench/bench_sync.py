"""Benchmark of the daily sync (not part of the test run).

    .venv/bin/python bench/bench_sync.py                  # full: 19,205 symbols, ~25 min
    .venv/bin/python bench/bench_sync.py --symbols 2000   # smaller universe, same shape

1. First load: the whole history (prices, dividends, profiles) for every
   symbol. At Premium's 750 calls/min that is over an hour, so the simulator's
   limit is multiplied by --scale and its latency divided by it; the figure
   reported is the rate achieved / the client's pace.
2. Daily sync after that first load, at Premium's real 750 calls/min: the next
   session's bars are not stored yet (they are removed from the warehouse) and
   profiles were fetched a day earlier (their fetched_at moved back one day),
   which is the state a sync meets on an ordinary weekday. Reported: API calls
   (goal <= 3,000; the old script made 11,360) and wall time against the bound
   the limit sets, calls / 12.5 per second (goal: within 1.15x of it + 30 s).

Both runs are the real `stock-assets sync` command against the simulator
served by `stock-assets simulate` in its own process; calls are counted from
the simulator's request log.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from stock_assets.fmp import DEFAULT_PACE_FRACTION

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEY = "bench-key"
PREMIUM = 750
LATENCY_MS, JITTER_MS = 80.0, 40.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Simulator:
    """`stock-assets simulate` in its own process, logging requests to a file."""

    def __init__(self, symbols: int, limit: int, latency_ms: float, jitter_ms: float, log: Path,
                 plan: str = "premium", now: str | None = None):
        self.port, self.log = free_port(), log
        self.proc = subprocess.Popen(
            [str(BIN / "stock-assets"), "simulate", "--port", str(self.port), "--plan", plan,
             "--symbols", str(symbols), "--api-key", KEY, "--rate-limit-per-min", str(limit),
             "--latency-ms", str(latency_ms), "--latency-jitter-ms", str(jitter_ms),
             "--request-log", str(log), *(["--now", now] if now else [])],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.base_url = f"http://127.0.0.1:{self.port}/stable"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/_sim/health", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError("the simulator did not start: " + self.proc.stderr.read().decode()[-2000:])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def requests(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


def run_sync(env: dict[str, str], work: Path) -> float:
    started = time.monotonic()
    with open(work / "sync.log", "a") as out:
        code = subprocess.call([str(BIN / "stock-assets"), "sync"], cwd=work, env=env, stdout=out,
                               stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"stock-assets sync failed (exit {code}); see {work / 'sync.log'}")
    return seconds


def as_next_day(db: Path) -> None:
    """The state an ordinary weekday's sync meets: the last session not stored, profiles a day old."""
    from stock_assets.warehouse import WarehouseResource

    def work(conn) -> None:
        last = conn.execute("SELECT max(date) FROM market.prices").fetchone()[0]
        conn.execute("DELETE FROM market.prices WHERE date = ?", [last])
        conn.execute("DELETE FROM market.dividends WHERE ex_date = ?", [last])
        conn.execute("UPDATE market.company_profiles SET fetched_at = fetched_at - INTERVAL 1 DAY")

    WarehouseResource(database=str(db)).transaction(work)


def calls_by_path(requests: list[dict]) -> dict[str, int]:
    return dict(collections.Counter(r["path"] for r in requests).most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=19205)
    parser.add_argument("--scale", type=float, default=8.0, help="first load: limit x scale, latency / scale")
    parser.add_argument("--daily-only", metavar="WORK", type=Path,
                        help="skip the first load: reuse the work folder of an earlier run")
    args = parser.parse_args()

    work = args.daily_only or Path(tempfile.mkdtemp(prefix="bench-sync-"))
    if not args.daily_only:
        (work / "dagster_home").mkdir()
        (work / "dagster_home" / "dagster.yaml").write_text((ROOT / "dagster_home" / "dagster.yaml").read_text())
    env = {**os.environ, "FMP_API_KEY": KEY, "FMP_PLAN": "premium", "DAGSTER_HOME": str(work / "dagster_home"),
           "STOCK_ASSETS_DB": str(work / "stocks.sqlite"), "FMP_LIMITER_STATE": str(work / "limit.sqlite")}
    print(f"universe {args.symbols} symbols; work folder {work}")
    if args.daily_only:
        daily_sync(args, work, env, first=None)
    else:
        first_load(args, work, env)


def first_load(args, work: Path, env: dict[str, str]) -> None:
    first_limit = int(PREMIUM * args.scale)
    sim = Simulator(args.symbols, first_limit, LATENCY_MS / args.scale, JITTER_MS / args.scale, work / "first.jsonl")
    try:
        env_first = {**env, "FMP_BASE_URL": sim.base_url, "FMP_RATE_LIMIT_PER_MIN": str(first_limit)}
        first_s = run_sync(env_first, work)
        first = sim.requests()
    finally:
        sim.stop()
    print()
    print(f"first load  (limit {first_limit}/min, latency {LATENCY_MS / args.scale:.0f}"
          f"+{JITTER_MS / args.scale:.0f} ms): {len(first):,} calls in {first_s:.1f}s")
    first_pace = first_limit * DEFAULT_PACE_FRACTION / 60
    print(f"            rate achieved / pace = {len(first) / first_s:.2f}/s / {first_pace:.2f}/s "
          f"= {len(first) / first_s / first_pace:.3f}")
    print(f"            calls by endpoint: {calls_by_path(first)}")
    daily_sync(args, work, env, first)


def daily_sync(args, work: Path, env: dict[str, str], first: list[dict] | None) -> None:
    as_next_day(work / "stocks.sqlite")
    (work / "daily.jsonl").unlink(missing_ok=True)
    sim = Simulator(args.symbols, PREMIUM, LATENCY_MS, JITTER_MS, work / "daily.jsonl")
    try:
        daily_s = run_sync({**env, "FMP_BASE_URL": sim.base_url, "FMP_RATE_LIMIT_PER_MIN": str(PREMIUM)}, work)
        daily = sim.requests()
    finally:
        sim.stop()
    bound = len(daily) / (PREMIUM / 60)
    rate_limited = sum(1 for r in daily + (first or []) if r["status"] == 429)
    print(f"daily sync  (Premium {PREMIUM}/min, latency {LATENCY_MS:.0f}+{JITTER_MS:.0f} ms): "
          f"{len(daily):,} calls in {daily_s:.1f}s (old script: 11,360 calls, 18.3 min)")
    print(f"            calls by endpoint: {calls_by_path(daily)}")
    print(f"            rate-limit bound = calls / 12.5 per s = {bound:.1f}s; "
          f"wall / bound = {daily_s / bound:.3f}; goal wall <= 1.15 x bound + 30 s = {1.15 * bound + 30:.1f}s "
          f"-> {'met' if daily_s <= 1.15 * bound + 30 else 'NOT met'}")
    print(f"            calls goal <= 3,000 -> {'met' if len(daily) <= 3000 else 'NOT met'}; "
          f"429s met: {rate_limited}")


if __name__ == "__main__":
    main()
