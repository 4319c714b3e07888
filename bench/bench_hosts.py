"""Benchmark of one FMP key shared by hosts through Redis (not part of the test run): ~6 minutes.

    .venv/bin/python bench/bench_hosts.py

A "host" is a process of its own, in a working folder of its own (bench_client's pacing case), sharing nothing with the other
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_client import KEY, Simulator, pacing_case  # noqa: E402
from stock_assets.fmp import DEFAULT_PACE_FRACTION, FMPResource  # noqa: E402
from stock_assets_tests.servers import redis_server  # noqa: E402

PREMIUM = 750


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

            print(f"\n## At Premium's limit ({PREMIUM}/min; the client paces at {DEFAULT_PACE_FRACTION:.0%} of it), "
                  f"60-100 ms a call, 75 s a case (first 10 s excluded), 16 threads a host")
            print(f"{'hosts':>5}{'calls':>7}{'rate/s':>8}{'of limit':>10}{'busiest minute':>16}{'429s':>6}{'429 share':>11}")
            for hosts in (1, 2):
                row = pacing_case(sim, symbols, hosts, 16, 75.0, 10.0, tmp, DEFAULT_PACE_FRACTION, limit=PREMIUM,
                                  state=redis.url(hosts), name=f"premium-{hosts}")
                print(f"{hosts:>5}{row['calls']:>7}{row['rate']:>8.2f}{row['of_limit']:>10.3f}"
                      f"{row['busiest_minute']:>11} / {PREMIUM}{row['429']:>6}{row['429_share']:>11.2%}", flush=True)
            print("goals: >= 0.97 of the limit in each case; the busiest minute never above the limit; <= 0.5% 429s")

            print("\n## Limit raised to 60,000/min, 200 ms a call, 8 threads a host: a host's own concurrency bounds it")
            rows = [pacing_case(sim, symbols, hosts, 8, 30.0, 5.0, tmp, DEFAULT_PACE_FRACTION, limit=60_000,
                                state=redis.url(10 + hosts), latency=(0.2, 0.0), name=f"latency-{hosts}")
                    for hosts in (1, 2)]
            for hosts, row in zip((1, 2), rows):
                print(f"{hosts} host(s): {row['rate']:.1f} calls/s, {row['429']} 429s")
            print(f"two hosts / one host: {rows[1]['rate'] / rows[0]['rate']:.2f}x (goal >= 1.8x)")
    finally:
        sim.close()


if __name__ == "__main__":
    main()
