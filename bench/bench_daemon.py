"""Benchmark: the daily sync under the daemon (`dagster dev`) beside the headless `stock-assets sync`.

    .venv/bin/python bench/bench_daemon.py                 # 300 symbols, a first load on each side
    .venv/bin/python bench/bench_daemon.py --symbols 600

Both sides start from an empty warehouse and instance and use the same
simulator (`stock-assets simulate` in its own process). The headless side
runs `stock-assets sync`. The daemon side runs `dagster dev` on the project's
`dagster.yaml` and launches the `universe` job the way the schedule does (a
run with the sync tag, through the webserver); the `sync_after_universe`
sensor then requests the session and shard runs, and the run queue launches
them. Reported for each side, from the run records of its instance: wall time
(from the universe run's launch to the last run's end), runs, and runs in
flight on average (summed run durations / wall). Goals: daemon wall <= 1.2 x
headless; daemon runs in flight >= 1.8 of `max_concurrent_runs: 2`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_sync import KEY, Simulator  # noqa: E402
from stock_assets.tags import SYNC_TAG  # noqa: E402
from stock_assets_tests.ui_support import dagster_dev  # noqa: E402

BIN = Path(sys.executable).parent


def side(work: Path, sim: Simulator, limit: int) -> dict[str, str]:
    (work / "dagster_home").mkdir(parents=True)
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", work / "dagster_home" / "dagster.yaml")
    return {**os.environ, "FMP_API_KEY": KEY, "FMP_PLAN": "premium", "FMP_BASE_URL": sim.base_url,
            "FMP_RATE_LIMIT_PER_MIN": str(limit), "DAGSTER_HOME": str(work / "dagster_home"),
            "STOCK_ASSETS_DB": str(work / "stocks.sqlite"), "STOCK_ASSETS_DATA": str(work / "lake-files"), "FMP_LIMITER_STATE": str(work / "limit.sqlite")}


def figures(home: Path, since: float) -> dict[str, float]:
    """Wall from `since` to the last run's end, runs, and summed run time / wall."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records()
        spans = [(r.start_time, r.end_time) for r in records if r.start_time and r.end_time]
        failed = sum(r.dagster_run.status != dg.DagsterRunStatus.SUCCESS for r in records)
    end = max(e for _, e in spans)
    wall = end - since
    return {"wall_s": wall, "runs": len(records), "failed": failed,
            "in_flight": sum(e - s for s, e in spans) / wall}


def headless(work: Path, env: dict[str, str]) -> dict[str, float]:
    started = time.time()
    with open(work / "sync.log", "w") as log:
        code = subprocess.call([str(BIN / "stock-assets"), "sync"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"stock-assets sync failed ({code}): see {work / 'sync.log'}")
    return figures(Path(env["DAGSTER_HOME"]), started)


def daemon(work: Path, env: dict[str, str], timeout_s: float) -> dict[str, float]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        with dagster_dev(work) as ui:
            started = time.time()
            ui.launch_job("universe", {SYNC_TAG: "bench-daemon"})
            wait_until_settled(Path(env["DAGSTER_HOME"]), timeout_s)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return figures(Path(env["DAGSTER_HOME"]), started)


def wait_until_settled(home: Path, timeout_s: float, quiet_s: float = 45) -> None:
    """Until the sensor's runs exist and all have ended, with no new run for `quiet_s`."""
    deadline = time.monotonic() + timeout_s
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            runs = instance.get_runs()
        if len(runs) != seen:
            seen, quiet_since = len(runs), time.monotonic()
        if len(runs) > 1 and all(r.is_finished for r in runs) and time.monotonic() - quiet_since > quiet_s:
            return
        time.sleep(2)
    raise SystemExit(f"the daemon's sync did not settle within {timeout_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--limit", type=int, default=6000, help="the simulator's limit, calls/min")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    sim = Simulator(args.symbols, args.limit, args.latency_ms, args.latency_ms / 2, work / "requests.jsonl")
    try:
        ours = headless(work / "headless", side(work / "headless", sim, args.limit))
        print(f"headless  stock-assets sync: {ours['wall_s']:.1f} s, {ours['runs']:.0f} runs "
              f"({ours['failed']:.0f} failed), {ours['in_flight']:.2f} runs in flight on average", flush=True)
        theirs = daemon(work / "daemon", side(work / "daemon", sim, args.limit), args.timeout)
    finally:
        sim.stop()
    print(f"daemon    universe job + sensor + run queue: {theirs['wall_s']:.1f} s, {theirs['runs']:.0f} runs "
          f"({theirs['failed']:.0f} failed), {theirs['in_flight']:.2f} runs in flight on average")
    print(f"daemon / headless wall = {theirs['wall_s'] / ours['wall_s']:.2f} (goal <= 1.2); "
          f"daemon runs in flight = {theirs['in_flight']:.2f} of 2 (goal >= 1.8)")
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
