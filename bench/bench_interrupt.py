"""Interruptions and readers, measured side by side in one run.

For each way a sync is stopped (Ctrl-C to the process group, SIGTERM to the
command, SIGKILL of the command alone), on a fresh folder each time:
  - how long the sync takes to stop and how long until none of its processes is left;
  - how long `backfill-failed` takes to finish the sync, beside an
    uninterrupted sync of the same universe measured in the same run.
(The read copy this measured once is gone: readers attach the lake, bench_lake.py.)

    .venv/bin/python bench/bench_interrupt.py [--symbols 600] [--latency-ms 200]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


PROJECT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "stock_assets.cli"]
sys.path.insert(0, str(PROJECT))

from stock_assets.runs.instance_health import alive, descendants  # noqa: E402 - after the path is set


def environment(work: Path, symbols: int, latency_ms: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FMP_", "STOCK_ASSETS_"))}
    home = work / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text((PROJECT / "dagster_home" / "dagster.yaml").read_text())
    return {**env, "DAGSTER_HOME": str(home), "STOCK_ASSETS_DB": str(work / "data" / "stocks.sqlite"),
            "FMP_LIMITER_STATE": str(work / "data" / "limit.sqlite"), "STOCK_ASSETS_SIM_SYMBOLS": str(symbols),
            "STOCK_ASSETS_SIM_LATENCY_S": str(latency_ms / 1000)}


def timed(env: dict, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    done = subprocess.run([*CLI, *args], env=env, cwd=PROJECT, capture_output=True, text=True)
    return time.monotonic() - started, done


def interrupted_sync(how: str, symbols: int, latency_ms: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        env = environment(Path(folder), symbols, latency_ms)
        log = Path(folder) / "sync.log"
        proc = subprocess.Popen([*CLI, "sync"], env=env, cwd=PROJECT, stdout=log.open("w"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        while not re.search(r"\[(\d+)/", log.read_text()) or int(re.findall(r"\[(\d+)/", log.read_text())[-1]) < 5:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        processes = descendants(proc.pid) | {proc.pid}
        started = time.monotonic()
        if how == "SIGINT to the group":
            os.killpg(proc.pid, signal.SIGINT)
        elif how == "SIGTERM":
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stopped = time.monotonic() - started
        while any(alive(p) for p in processes):
            time.sleep(0.01)
        gone = time.monotonic() - started
        recovery_s, done = timed(env, "backfill-failed")
        assert done.returncode == 0, done.stdout + done.stderr
        runs = re.search(r"(\d+) of (\d+) runs succeeded", done.stdout)
        return {"how": how, "stop_s": stopped, "gone_s": gone, "recovery_s": recovery_s,
                "recovery_runs": int(runs.group(2)) if runs else 0}


def uninterrupted_sync(symbols: int, latency_ms: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        seconds, done = timed(environment(Path(folder), symbols, latency_ms), "sync")
        assert done.returncode == 0, done.stdout + done.stderr
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=600)
    parser.add_argument("--latency-ms", type=int, default=200)
    args = parser.parse_args()

    full_s = uninterrupted_sync(args.symbols, args.latency_ms)
    print(f"uninterrupted sync of {args.symbols} symbols ({args.latency_ms} ms a call): {full_s:.1f} s")
    print(f"{'interruption':<22} {'stopped s':>9} {'no process s':>12} {'recovery s':>10} "
          f"{'runs':>5} {'recovery / full sync':>20}")
    for how in ("SIGINT to the group", "SIGTERM", "SIGKILL of the command"):
        r = interrupted_sync(how, args.symbols, args.latency_ms)
        print(f"{r['how']:<22} {r['stop_s']:>9.2f} {r['gone_s']:>12.2f} {r['recovery_s']:>10.1f} "
              f"{r['recovery_runs']:>5} {r['recovery_s'] / full_s:>20.2f}")


if __name__ == "__main__":
    main()
