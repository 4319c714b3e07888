"""Interruptions and readers, measured side by side in one run.

For each way a sync is stopped (Ctrl-C to the process group, SIGTERM to the
command, SIGKILL of the command alone), on a fresh folder each time:
  - how long the sync takes to stop and how long until none of its processes is left;
  - how long `backfill-failed` takes to finish the sync, beside an
    uninterrupted sync of the same universe measured in the same run.
Then the read copy: how long `publish_read_copy` takes on a warehouse of the
first-load size (19,205 symbols x 5 years of bars, built directly in DuckDB),
beside how long writing one day's bars into it takes.

    .venv/bin/python bench/bench_interrupt.py [--symbols 600] [--latency-ms 200]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

PROJECT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "stock_assets.cli"]
sys.path.insert(0, str(PROJECT))

from stock_assets.instance_health import alive, descendants  # noqa: E402 - after the path is set


def environment(work: Path, symbols: int, latency_ms: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FMP_", "STOCK_ASSETS_"))}
    home = work / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text((PROJECT / "dagster_home" / "dagster.yaml").read_text())
    return {**env, "DAGSTER_HOME": str(home), "STOCK_ASSETS_DB": str(work / "data" / "stocks.duckdb"),
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


def read_copy_cost(symbols: int = 19_205, days: int = 1_255) -> dict:
    """The read copy on a first-load-sized warehouse, beside writing one day's bars."""
    from stock_assets.warehouse import WarehouseResource, prices_table

    with tempfile.TemporaryDirectory() as folder:
        warehouse = WarehouseResource(database=str(Path(folder) / "stocks.duckdb"))
        names = np.array([f"S{i:05d}" for i in range(symbols)])
        first = dt.date(2020, 1, 2)
        with warehouse.get_connection() as conn:
            for start in range(0, days, 100):  # a hundred days of bars at a time
                span = min(100, days - start)
                dates = np.repeat(np.datetime64(first) + np.arange(start, start + span), symbols)
                close = np.random.default_rng(start).uniform(1, 500, len(dates))
                table = pa.table({"symbol": np.tile(names, span), "date": dates, "open": close, "high": close,
                                  "low": close, "close": close, "volume": np.full(len(dates), 1000, np.int64),
                                  "source": np.full(len(dates), "historical-price-eod/full"),
                                  "loaded_at": np.full(len(dates), np.datetime64("2026-01-01T00:00:00", "us"))})
                conn.register("bars", table)
                conn.execute("INSERT INTO market.prices BY NAME SELECT * FROM bars")
                conn.unregister("bars")
        size_mb = os.path.getsize(warehouse.path) / 1e6
        day = first + dt.timedelta(days=days + 1)
        bars = [{"symbol": s, "date": day, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1}
                for s in names]
        started = time.monotonic()
        warehouse.write_rows("market.prices", prices_table(bars, "batch-quote"))
        write_s = time.monotonic() - started
        copy_s = min(warehouse.publish_read_copy() for _ in range(3))
        return {"rows": symbols * days, "size_mb": size_mb, "copy_s": copy_s, "day_write_s": write_s}


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
    cost = read_copy_cost()
    print(f"read copy of a {cost['rows']:,}-bar warehouse ({cost['size_mb']:.0f} MB): {cost['copy_s']:.2f} s; "
          f"writing one day's {19_205:,} bars: {cost['day_write_s']:.2f} s; "
          f"copy / day's write = {cost['copy_s'] / cost['day_write_s']:.1f}")


if __name__ == "__main__":
    main()
