"""Benchmark of the FMP client against the FMP simulator (not part of the test run).

    .venv/bin/python bench/bench_client.py            # full: ~4 min
    .venv/bin/python bench/bench_client.py --quick    # ~1 min
    .venv/bin/python bench/bench_client.py --fractions 0.9,0.97,0.98,0.99,1.0   # part C, ~13 min

Part A, pacing: 1 process and 4 processes sharing one key (one limiter file)
call `profile` as fast as the client lets them, against a simulator limited to
3,000 calls/min with 60-100 ms latency. The rate is measured from the
simulator's request log over a steady window (start-up excluded) and compared
with the configured pace (limit x pace_fraction); every 429 is counted.

Part B, chunking: the same profile fetches through the same client, limiter
and max concurrency, 5% of symbols 10x slower: the adaptive, barrier-free
`fetch_chunks` against fixed chunks with a barrier (the old script: submit a
chunk of N to a thread pool, wait for all of it, write, next chunk).

Part C, how close to the limit: the pacing cases of part A at several
`pace_fraction`s, each 75 s so that the simulator's sliding minute fills
(its count of accepted calls over the last 60 s), with the first 10 s left
out; reported against the plan's limit itself, with the 429 share.

The simulator runs in its own process so that its work does not share the
benchmark's GIL.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fmp_simulator import busiest_minute  # noqa: E402
from stock_assets.fmp import FMPResource  # noqa: E402

KEY = "bench-key"
LIMIT = 3000  # calls/min in part A
CHUNK_LIMIT = 60_000  # calls/min in part B: far above what latency allows
LATENCY_S, JITTER_S = 0.06, 0.04  # 60-100 ms, mean 80 ms


# --------------------------------------------------------------------------- simulator process
class Simulator:
    def __init__(self, n_symbols: int):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fmp_simulator", "--port", str(self.port), "--plan", "ultimate",
             "--symbols", str(n_symbols), "--api-key", KEY, "--rate-limit-per-min", str(LIMIT),
             "--now", "2024-07-10T18:00:00"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.root = f"http://127.0.0.1:{self.port}"
        self.base_url = self.root + "/stable"
        self.http = httpx.Client(base_url=self.root + "/_sim", timeout=120)
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.http.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"simulator did not start: {self.proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)

    def faults(self, **values) -> None:
        self.http.post("/faults", json={"reset": True, **values}).raise_for_status()

    def config(self, **values) -> None:
        self.http.post("/config", json=values).raise_for_status()

    def requests(self) -> list[dict]:
        return self.http.get("/requests").json()

    def clear(self) -> None:
        self.http.delete("/requests").raise_for_status()
        self.config(reset_limits=True)

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(10)


# --------------------------------------------------------------------------- part A: pacing
WORKER = textwrap.dedent("""
    import sys, threading, time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path
    from stock_assets.fmp import FMPResource
    base_url, key, state, go, ready, duration, threads, limit, fraction, symbols = sys.argv[1:11]
    threads = int(threads)
    r = FMPResource(api_key=key, base_url=base_url, plan="ultimate", rate_limit_per_min=int(limit),
                    limiter_state=state, max_in_flight=threads, pace_fraction=float(fraction))
    symbols = symbols.split(",")
    r._ensure_started()
    with ThreadPoolExecutor(threads) as pool:  # open the connections before the start
        list(pool.map(r.profile, symbols[:threads]))
    Path(ready).write_text("ok")
    while not Path(go).exists():
        time.sleep(0.005)
    start = float(Path(go).read_text())
    time.sleep(max(0.0, start - time.time()))
    end = start + float(duration)
    def work(k):
        i = k
        while time.time() < end:
            r.profile(symbols[i % len(symbols)])
            i += threads
    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool: t.start()
    for t in pool: t.join()
    r.close()
""")


def pacing_case(sim: Simulator, symbols: list[str], procs: int, threads: int, duration: float,
                warmup: float, tmp: Path, fraction: float = 0.9, *, limit: int = LIMIT, state: str | None = None,
                latency: tuple[float, float] = (LATENCY_S, JITTER_S), name: str | None = None) -> dict:
    """`procs` processes, each in a folder of its own, calling `profile` as fast as the key's shared
    limiter lets them (its state: a file of the case's, or `state`, e.g. a Redis URL)."""
    sim.faults(latency_s=latency[0], latency_jitter_s=latency[1])
    sim.config(rate_limit_per_min=limit)
    case = tmp / (name or f"pace{procs}-{fraction}")
    case.mkdir()
    time.sleep(1.1)  # the warm-up calls below must not share a second with a previous case
    sim.clear()
    go = case / "go"
    folders = [case / f"proc-{k}" for k in range(procs)]
    workers = []
    for folder in folders:
        folder.mkdir()
        workers.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, sim.base_url, KEY, state or str(case / "limiter.sqlite"), str(go),
             str(folder / "ready"), str(duration), str(threads), str(limit), str(fraction), ",".join(symbols)],
            cwd=folder, stderr=subprocess.PIPE))
    try:
        while not all((folder / "ready").exists() for folder in folders):
            if any(w.poll() is not None for w in workers):
                raise RuntimeError(b"".join(w.stderr.read() for w in workers if w.poll() is not None).decode())
            time.sleep(0.02)
        start = time.time() + 1.5
        (case / "go.tmp").write_text(repr(start))
        (case / "go.tmp").rename(go)  # a worker polling for `go` never reads it half-written
        for w in workers:
            w.wait()
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    log = [e for e in sim.requests() if e["path"] == "profile" and e["t"] >= start - 0.05]
    # Whole seconds, with edges between the limiter's per-second bursts.
    lo, hi = start + warmup - 0.5, start + duration - 0.5
    steady = [e for e in log if lo <= e["t"] < hi]
    pace = limit * fraction / 60
    rate = len([e for e in steady if e["status"] != 429]) / (hi - lo)
    rejected = sum(e["status"] == 429 for e in log)
    return {"case": f"{procs} process{'es' if procs > 1 else ''} x {threads} threads", "calls": len(log),
            "window_s": hi - lo, "rate": rate, "pace": pace, "ratio": rate / pace,
            "fraction": fraction, "of_limit": rate / (limit / 60), "429": rejected, "429_share": rejected / len(log),
            "busiest_minute": busiest_minute(log)}


# --------------------------------------------------------------------------- part B: chunking
def write(results: list, out) -> None:
    """What a chunk costs to keep: the same for both strategies."""
    for symbol, parsed in results:
        out.write(json.dumps([symbol, len(parsed.records)]) + "\n")
    out.flush()


def fixed_with_barrier(r: FMPResource, items: list[str], size: int, out) -> float:
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=r.max_in_flight) as pool:
        for k in range(0, len(items), size):
            chunk = items[k:k + size]
            results = list(zip(chunk, pool.map(r.profile, chunk)))  # wait for all of it
            write(results, out)
    return time.monotonic() - started


def adaptive(r: FMPResource, items: list[str], out) -> tuple[float, list[int]]:
    started = time.monotonic()
    for chunk in r.fetch_chunks(items, r.profile, label="bench", log=lambda message: None):
        write(chunk.results, out)
    summary = chunk.summary
    assert summary.succeeded == len(items), summary.failures[:3]
    return time.monotonic() - started, summary.chunk_sizes


def chunking(sim: Simulator, symbols: list[str], n_items: int, fixed_size: int, max_in_flight: int,
             reps: int, tmp: Path) -> dict:
    rng = random.Random(11)
    items = rng.sample(symbols, n_items)
    slow = set(rng.sample(items, n_items // 20))
    sim.faults(latency_s=LATENCY_S, latency_jitter_s=JITTER_S, slow_symbols=sorted(slow), slow_symbol_factor=10)
    sim.config(rate_limit_per_min=CHUNK_LIMIT)
    sim.clear()
    r = FMPResource(api_key=KEY, base_url=sim.base_url, plan="ultimate", rate_limit_per_min=CHUNK_LIMIT,
                    limiter_state=str(tmp / "chunk-limiter.sqlite"), max_in_flight=max_in_flight,
                    chunk_target_s=2.0)
    fixed_s, adaptive_s, sizes = [], [], []
    try:
        r.profile(items[0])  # start the client (limiter, connections) outside the timings
        with open(tmp / "out.jsonl", "w") as out:
            for _ in range(reps):
                fixed_s.append(fixed_with_barrier(r, items, fixed_size, out))
                seconds, sizes = adaptive(r, items, out)
                adaptive_s.append(seconds)
    finally:
        r.close()
    requests = sim.requests()
    return {"items": n_items, "slow": len(slow), "fixed_size": fixed_size, "max_in_flight": max_in_flight,
            "fixed_s": statistics.median(fixed_s), "adaptive_s": statistics.median(adaptive_s),
            "fixed_runs": fixed_s, "adaptive_runs": adaptive_s, "chunk_sizes": sizes, "reps": reps,
            "429": sum(e["status"] == 429 for e in requests)}


# --------------------------------------------------------------------------- part C: fractions
def fraction_sweep(sim: Simulator, symbols: list[str], fractions: list[float], tmp: Path) -> None:
    duration, warmup = 75.0, 10.0
    print(f"\n## How close to the limit: limit {LIMIT}/min against the simulator's sliding minute, "
          f"latency {LATENCY_S * 1000:.0f}-{(LATENCY_S + JITTER_S) * 1000:.0f} ms; {duration:.0f} s per case, "
          f"first {warmup:.0f} s excluded; rate counts accepted calls")
    print(f"{'pace_fraction':>13}  {'case':<26}{'calls':>7}{'rate/s':>8}{'rate/pace':>10}{'rate/limit':>11}"
          f"{'429s':>6}{'429 share':>10}")
    for fraction in fractions:
        for procs, threads in ((1, 16), (4, 8)):
            row = pacing_case(sim, symbols, procs, threads, duration, warmup, tmp, fraction)
            print(f"{fraction:>13.2f}  {row['case']:<26}{row['calls']:>7}{row['rate']:>8.2f}{row['ratio']:>10.3f}"
                  f"{row['of_limit']:>11.3f}{row['429']:>6}{row['429_share']:>10.2%}", flush=True)
    print("goal: the highest fraction with a 429 share <= 0.5% in both cases, at >= 0.97 of the limit")


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (~1 min) instead of the full one")
    parser.add_argument("--fractions", help="part C only: comma-separated pace_fractions to compare")
    args = parser.parse_args(argv)
    duration, warmup = (12.0, 2.0) if args.quick else (45.0, 5.0)
    n_items, reps = (400, 1) if args.quick else (1200, 3)

    print(f"FMP client benchmark ({'quick' if args.quick else 'full'}), {os.cpu_count()} cores, "
          f"python {sys.version.split()[0]}")
    print(f"simulator: separate process, plan ultimate, latency {LATENCY_S * 1000:.0f}-"
          f"{(LATENCY_S + JITTER_S) * 1000:.0f} ms")
    sim = Simulator(n_symbols=1500)
    try:
        probe = FMPResource(api_key=KEY, base_url=sim.base_url, plan="ultimate", rate_limit_per_min=LIMIT,
                            limiter_state=str(Path(tempfile.mkdtemp()) / "probe.sqlite"))
        symbols = sorted(row.symbol for row in probe.company_screener("NYSE,NASDAQ,AMEX").records)
        probe.close()
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            if args.fractions:
                return fraction_sweep(sim, symbols, [float(f) for f in args.fractions.split(",")], tmp)
            print(f"\n## Pacing: limit {LIMIT}/min, pace_fraction 0.9 -> pace {LIMIT * 0.9 / 60:.0f}/s; "
                  f"{duration:.0f} s per case, first {warmup:.0f} s excluded")
            rows = [pacing_case(sim, symbols, 1, 16, duration, warmup, tmp),
                    pacing_case(sim, symbols, 4, 8, duration, warmup, tmp)]
            print(f"{'case':<28}{'calls':>7}{'window s':>10}{'rate/s':>9}{'pace/s':>8}{'rate/pace':>11}"
                  f"{'429s':>6}{'429 share':>11}")
            for row in rows:
                print(f"{row['case']:<28}{row['calls']:>7}{row['window_s']:>10.0f}{row['rate']:>9.2f}"
                      f"{row['pace']:>8.1f}{row['ratio']:>11.3f}{row['429']:>6}{row['429_share']:>11.2%}")
            print("goals: rate/pace >= 0.95, 429 share <= 0.5%")

            c = chunking(sim, symbols, n_items, 100, 16, reps, tmp)
            print(f"\n## Chunking: {c['items']} profile calls, {c['slow']} symbols (5%) 10x slower, "
                  f"max_in_flight {c['max_in_flight']} on both sides, same client and limiter")
            print(f"limit {CHUNK_LIMIT}/min (pace {CHUNK_LIMIT * 0.9 / 60:.0f}/s): far above what "
                  f"{c['max_in_flight']} in flight at ~80 ms can reach, so latency, not the limit, dominates")
            print(f"{'strategy':<34}{'wall s (median of ' + str(c['reps']) + ')':>24}{'items/s':>9}   runs")
            for name, key in ((f"fixed chunks of {c['fixed_size']} + barrier", "fixed"), ("adaptive, no barrier", "adaptive")):
                runs = ", ".join(f"{x:.2f}" for x in c[f"{key}_runs"])
                print(f"{name:<34}{c[f'{key}_s']:>24.2f}{c['items'] / c[f'{key}_s']:>9.1f}   {runs}")
            print(f"speedup (fixed / adaptive): {c['fixed_s'] / c['adaptive_s']:.2f}x   (goal >= 1.3x); "
                  f"adaptive chunk sizes: {c['chunk_sizes']}; 429s: {c['429']}")
    finally:
        sim.close()


if __name__ == "__main__":
    main()
