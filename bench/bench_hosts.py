"""Benchmark of one FMP key shared by hosts through Redis (not part of the test run): ~6 minutes.

    .venv/bin/python bench/bench_hosts.py

A "host" is a process of its own, in a working folder of its own, sharing nothing with the other
but the key's limit in Redis (pyrate-limiter's Redis bucket, as `FMP_LIMITER_STATE=redis://...`
configures it); each calls `profile` as fast as its client lets it (16 threads). Redis is Debian's
`redis-server`, started here in a temporary folder on a free port; the simulator runs in its own
process (bench_client.Simulator). Measured side by side in one run:

1. At Premium's limit (750 calls a minute), 60-100 ms a call, 75 s a case so that the simulator's
   sliding minute fills: one host, then two hosts at once. The calls accepted per second over the
   steady window (the first 10 s left out) against the limit, the most calls the simulator counted
   in any sliding minute (never above the limit), and the 429 share.
   Goals: each case >= 0.97 of the limit; never above it; <= 0.5% 429s.
2. The limit raised far above what the hosts reach (60,000 a minute) and 200 ms a call, so that each
   host's own fetch concurrency (8 in flight) is the bound, not this machine's 2 cores: two hosts'
   calls per second against one host's.                                       Goal: >= 1.8x.
"""

from __future__ import annotations

import sys
import tempfile
import time
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_client import KEY, WORKER, Simulator  # noqa: E402
from stock_assets.fmp import FMPResource  # noqa: E402
from stock_assets.fmp import DEFAULT_PACE_FRACTION  # noqa: E402
from stock_assets_tests.servers import redis_server  # noqa: E402

PREMIUM = 750


def hosts_case(sim: Simulator, symbols: list[str], redis_url: str, hosts: int, threads: int, limit: int,
               duration: float, warmup: float, tmp: Path, name: str) -> dict:
    """`hosts` processes, each in its own folder, calling as fast as the shared limit lets them."""
    case = tmp / name
    case.mkdir()
    time.sleep(1.1)  # the warm-up calls below must not share a second with the previous case
    sim.clear()
    go = case / "go"
    workers = []
    for k in range(hosts):
        folder = case / f"host-{k}"
        folder.mkdir()
        workers.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, sim.base_url, KEY, redis_url, str(go), str(folder / "ready"),
             str(duration), str(threads), str(limit), str(DEFAULT_PACE_FRACTION), ",".join(symbols)],
            cwd=folder, stderr=subprocess.PIPE))
    try:
        while not all((case / f"host-{k}" / "ready").exists() for k in range(hosts)):
            if any(w.poll() is not None for w in workers):
                raise RuntimeError(b"".join(w.stderr.read() for w in workers if w.poll() is not None).decode())
            time.sleep(0.02)
        start = time.time() + 1.5
        (case / "go.tmp").write_text(repr(start))
        (case / "go.tmp").rename(go)
        for w in workers:
            w.wait()
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    log = [e for e in sim.requests() if e["path"] == "profile" and e["t"] >= start - 0.05]
    accepted = sorted(e["t"] for e in log if e["status"] == 200)
    lo, hi = start + warmup - 0.5, start + duration - 0.5
    rate = sum(1 for t in accepted if lo <= t < hi) / (hi - lo)
    rejected = sum(e["status"] == 429 for e in log)
    return {"hosts": hosts, "calls": len(log), "rate": rate, "of_limit": rate / (limit / 60),
            "busiest_minute": busiest_minute(accepted), "429": rejected, "429_share": rejected / max(1, len(log))}


def busiest_minute(times: list[float]) -> int:
    """The most accepted calls in any 60 s window: what the server's sliding minute counted at worst."""
    most, first = 0, 0
    for last, t in enumerate(times):
        while times[first] <= t - 60.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def main() -> None:
    print("One key shared by hosts through Redis: Debian's redis-server; the simulator in its own process")
    sim = Simulator(n_symbols=1500)
    try:
        with redis_server() as redis, tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            probe = FMPResource(api_key=KEY, base_url=sim.base_url, plan="ultimate", rate_limit_per_min=60_000,
                                limiter_state=str(tmp / "probe.sqlite"))
            symbols = sorted(row.symbol for row in probe.company_screener("NYSE,NASDAQ,AMEX").records)
            probe.close()

            sim.faults(latency_s=0.06, latency_jitter_s=0.04)
            sim.config(rate_limit_per_min=PREMIUM)
            print(f"\n## At Premium's limit ({PREMIUM}/min; the client paces at {DEFAULT_PACE_FRACTION:.0%} of it), "
                  f"60-100 ms a call, 75 s a case (first 10 s excluded), 16 threads a host")
            print(f"{'hosts':>5}{'calls':>7}{'rate/s':>8}{'of limit':>10}{'busiest minute':>16}{'429s':>6}{'429 share':>11}")
            for hosts in (1, 2):
                row = hosts_case(sim, symbols, redis.url(hosts), hosts, 16, PREMIUM, 75.0, 10.0, tmp, f"premium-{hosts}")
                print(f"{row['hosts']:>5}{row['calls']:>7}{row['rate']:>8.2f}{row['of_limit']:>10.3f}"
                      f"{row['busiest_minute']:>11} / {PREMIUM}{row['429']:>6}{row['429_share']:>11.2%}", flush=True)
            print("goals: >= 0.97 of the limit in each case; the busiest minute never above the limit; <= 0.5% 429s")

            sim.faults(latency_s=0.2, latency_jitter_s=0.0)
            sim.config(rate_limit_per_min=60_000)
            print("\n## Limit raised to 60,000/min, 200 ms a call, 8 threads a host: a host's own concurrency bounds it")
            rows = [hosts_case(sim, symbols, redis.url(10 + hosts), hosts, 8, 60_000, 30.0, 5.0, tmp, f"latency-{hosts}")
                    for hosts in (1, 2)]
            for row in rows:
                print(f"{row['hosts']} host(s): {row['rate']:.1f} calls/s, {row['429']} 429s")
            print(f"two hosts / one host: {rows[1]['rate'] / rows[0]['rate']:.2f}x (goal >= 1.8x)")
    finally:
        sim.close()


if __name__ == "__main__":
    main()
