"""Benchmark of the lake against the DuckDB-file warehouse before it, side by side in one run (not a test).

    .venv/bin/python bench/bench_lake.py                  # 19,205 symbols: about an hour
    .venv/bin/python bench/bench_lake.py --symbols 2000   # same shape, smaller
    .venv/bin/python bench/bench_lake.py --work DIR       # keep (and reuse) DIR's first loads
    .venv/bin/python bench/bench_lake.py --ours COMMIT    # the lake's side at COMMIT, not this checkout

The baseline is main before the lake (`--baseline`, default e8367d4: DuckDB 2.0.1, one file), checked
out in a git worktree and installed in a virtualenv of its own. The clock is pinned as in
bench_daily.py (first load Thursday 2026-12-03 evening, the daily sync Friday evening), the simulator
has FMP's ordinary bad days on, 60 ms (+-20) latency a call.

1. First load, each code on its own folder: `stock-assets sync` at Ultimate's pace (3,000/min).
2. The Premium daily sync (750/min) from a copy of each first load (every full profile made 30 days
   older, so today's refresh turn is due, as on an ordinary day).            Goal: wall <= 1.1x.
3. Queries on each first load, each side's DuckDB in its own process, best of 5: the README's three
   metrics queries, a cross-section of one day (19,205 bars), one symbol's history, one symbol's
   total-return closes (`market.prices_adjusted`).                            Goal: <= 1.5x each.
4. Storage: the file's bytes against the catalog's and the Parquet files'.
5. A month of daily writes on a copy of the lake (22 sessions, each: the session's bars, the re-read
   of the bars 2 and 5 sessions back with a few revised, the metrics of a sync), through the
   warehouse's own write methods: the lake's files after it with no upkeep, and with the nightly
   `warehouse_upkeep` after each session.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_daily import DAILY_AT, FIRST_LOAD_AT, JITTER_MS, LATENCY_MS, PREMIUM, ULTIMATE  # noqa: E402
from bench.bench_sync import KEY, Simulator  # noqa: E402

BASELINE = "e8367d4"  # main before the lake: one DuckDB 2.0.1 file

# Run under each side's Python: argv = kind ("file" or "lake"), where (JSON), the day of the cross-section.
QUERIES = r'''
import json, sys, time
kind, where, day = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
if kind == "file":
    import duckdb
    conn = duckdb.connect(where["database"], read_only=True)
    read = lambda sql: conn.execute(sql).fetchall()
else:
    from stock_assets.warehouse import WarehouseResource
    lake = WarehouseResource(**where)
    conn = lake.connect(read_only=True)
    # As `stock-assets sql` reads: checked against a commit landing meanwhile (a commit before the
    # check, `--ours`, reads unchecked).
    consistently = getattr(lake, "read_consistently", lambda conn, read: read())
    read = lambda sql: consistently(conn, lambda: conn.execute(sql).fetchall())
symbol = conn.execute("SELECT symbol FROM market.prices GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1").fetchone()[0]
queries = {
    "README 1: last five syncs": """SELECT batch_id, started_at, round(duration_s) AS s, api_calls, calls_saved,
        round(seconds_saved) AS saved_s, item_success_rate FROM metrics.sync_summary WHERE batch_kind = 'sync'
        ORDER BY started_at DESC LIMIT 5""",
    "README 2: endpoint trends": """SELECT day, endpoint, calls, retries, rate_limited, round(latency_p95_max_s, 3)
        FROM metrics.endpoint_trends ORDER BY day DESC, calls DESC""",
    "README 3: savings": """SELECT name, sum(calls_saved), round(sum(seconds_saved) / 60, 1) FROM metrics.savings_by_day
        GROUP BY name ORDER BY 2 DESC""",
    "one day's cross-section": f"SELECT * FROM market.prices WHERE date = DATE '{day}'",
    "one symbol's history": f"SELECT * FROM market.prices WHERE symbol = '{symbol}' ORDER BY date",
    "one symbol, total return": f"SELECT * FROM market.prices_adjusted WHERE symbol = '{symbol}' ORDER BY date",
    "count by year": "SELECT year(date), count(*), avg(close) FROM market.prices GROUP BY 1 ORDER BY 1",
}
out = {}
for name, sql in queries.items():
    best, rows = float("inf"), 0
    for _ in range(5):
        started = time.perf_counter()
        rows = len(read(sql))
        best = min(best, time.perf_counter() - started)
    out[name] = {"s": best, "rows": rows}
print(json.dumps(out))
'''


def environment(work: Path, sim: Simulator, plan: str, limit: int, now: str, lake: bool) -> dict[str, str]:
    env = {**os.environ, "STOCK_ASSETS_NOW": now, "FMP_API_KEY": KEY, "FMP_PLAN": plan, "FMP_BASE_URL": sim.base_url,
           "FMP_RATE_LIMIT_PER_MIN": str(limit), "DAGSTER_HOME": str(work / "dagster_home"),
           "FMP_LIMITER_STATE": str(work / "limit.sqlite"), "TZ": "UTC"}
    if lake:  # the data path named: a copied lake reads and writes its own files, not the original's
        return {**env, "STOCK_ASSETS_DB": str(work / "stocks.sqlite"), "STOCK_ASSETS_DATA": str(work / "lake-files")}
    return {**env, "STOCK_ASSETS_DB": str(work / "stocks.duckdb")}


def where(work: Path, lake: bool) -> dict[str, str]:
    if lake:
        return {"database": str(work / "stocks.sqlite"), "data_path": str(work / "lake-files")}
    return {"database": str(work / "stocks.duckdb")}


def sync(python: Path, env: dict[str, str], work: Path) -> float:
    started = time.monotonic()
    with open(work / "sync.log", "a") as out:
        code = subprocess.call([str(python), "-m", "stock_assets.cli", "sync"], cwd=work, env=env, stdout=out,
                               stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"stock-assets sync failed (exit {code}); see {work / 'sync.log'}")
    return time.monotonic() - started


def first_load(args, python: Path, work: Path, lake: bool) -> float:
    if (work / "done").exists():
        return float((work / "done").read_text())
    shutil.rmtree(work, ignore_errors=True)
    (work / "dagster_home").mkdir(parents=True)
    shutil.copy(code_of(python) / "dagster_home" / "dagster.yaml", work / "dagster_home" / "dagster.yaml")
    sim = Simulator(args.symbols, ULTIMATE, LATENCY_MS, JITTER_MS, work / "first.jsonl", plan="ultimate",
                    now=FIRST_LOAD_AT)
    try:
        wall = sync(python, environment(work, sim, "ultimate", ULTIMATE, FIRST_LOAD_AT, lake), work)
    finally:
        sim.stop()
    (work / "done").write_text(f"{wall}")
    return wall


def copy_state(state: Path, work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(state, work, ignore=shutil.ignore_patterns("*.jsonl", "sync.log", "cache", "done"))


def age_profiles(python: Path, work: Path, lake: bool, days: int = 30) -> None:
    sql = f"UPDATE market.company_profiles SET fetched_at = fetched_at - INTERVAL {days} DAY"
    script = ("import json, sys\nfrom stock_assets.warehouse import WarehouseResource\n"
              "w = WarehouseResource(**json.loads(sys.argv[1]))\nw.transaction(lambda c: c.execute(sys.argv[2]))"
              if lake else "import duckdb, json, sys\nduckdb.connect(json.loads(sys.argv[1])['database']).execute(sys.argv[2])")
    # Run from the side's own folder: `-c` puts the working folder first on the path, and this
    # checkout's package is not the side's.
    subprocess.run([str(python), "-c", script, json.dumps(where(work, lake)), sql], check=True, cwd=work)


def daily(args, python: Path, state: Path, work: Path, lake: bool) -> float:
    copy_state(state, work)
    age_profiles(python, work, lake)
    sim = Simulator(args.symbols, PREMIUM, LATENCY_MS, JITTER_MS, work / "daily.jsonl", plan="premium", now=DAILY_AT)
    try:
        return sync(python, environment(work, sim, "premium", PREMIUM, DAILY_AT, lake), work)
    finally:
        sim.stop()


def queries(python: Path, work: Path, lake: bool) -> dict:
    day = dt.date.fromisoformat(FIRST_LOAD_AT[:10]).isoformat()
    done = subprocess.run([str(python), "-c", QUERIES, "lake" if lake else "file", json.dumps(where(work, lake)), day],
                          capture_output=True, text=True, check=True, cwd=work)
    return json.loads(done.stdout.strip().splitlines()[-1])  # the figures: the last line (a library may speak first)


def storage(work: Path, lake: bool) -> tuple[int, int]:
    """(bytes, files) of the warehouse."""
    paths = [work / "stocks.sqlite", *(work / "lake-files").rglob("*")] if lake else [work / "stocks.duckdb"]
    files = [p for p in paths if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def a_month(state: Path, work: Path, nightly_upkeep: bool) -> dict:
    """22 sessions of the daily sync's writes on a copy of the lake, through the warehouse's methods."""
    from stock_assets import metrics
    from stock_assets.fmp.accounting import CallLog
    from stock_assets.run_stats import RunStats
    from stock_assets.warehouse import WarehouseResource

    copy_state(state, work)
    wh = WarehouseResource(**where(work, True))
    symbols = sorted(wh.universe_symbols())
    day, sessions = dt.date(2026, 12, 7), []
    while len(sessions) < 22:
        if day.weekday() < 5:
            sessions.append(day)
        day += dt.timedelta(days=1)
    for i, session in enumerate(sessions):
        bars = [{"symbol": s, "date": session, "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.0 + i / 100,
                 "volume": 1000} for s in symbols]
        wh.write_official_prices(bars, "eod-bulk")
        for back in (2, 5):  # the re-read of earlier sessions, a few bars revised
            if i >= back:
                again = [{**b, "date": sessions[i - back], "close": b["close"] + (0.01 if n % 500 == 0 else 0)}
                         for n, b in enumerate(bars)]
                wh.write_official_prices(again, "eod-bulk")
        for asset in ("symbols", "daily_prices", "dividends", "splits"):
            metrics.record(wh, RunStats(asset, session.isoformat(), CallLog(), 750), f"run-{i}-{asset}",
                           {"stock_assets/sync": f"sync-{i}"}, "succeeded")
        if nightly_upkeep:
            wh.upkeep(dt.timedelta(days=30))
    files = wh.files()
    return {"data_files": files.data_files, "delete_files": files.delete_files, "files_kept": files.files_kept,
            "snapshots": files.snapshots, "on_disk": storage(work, True)[1], "bytes": storage(work, True)[0]}


def code_of(python: Path) -> Path:
    """The code a side's Python runs (its instance's dagster.yaml with it): this checkout, or the
    worktree beside its virtualenv."""
    if python == Path(sys.executable):
        return ROOT
    venv = python.parents[1]
    return venv.with_name(venv.name.removesuffix("-venv") + "-code")


def baseline_python(work: Path, commit: str, name: str = "baseline") -> Path:
    """A Python with `commit`'s code installed, in a git worktree and a virtualenv of their own."""
    code, venv = work / f"{name}-code", work / f"{name}-venv"
    if not (venv / "bin" / "python").exists():
        subprocess.check_call(["git", "-C", str(ROOT), "worktree", "add", "--force", "--detach", str(code), commit],
                              stdout=subprocess.DEVNULL)
        subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
        subprocess.check_call([str(venv / "bin" / "pip"), "install", "--quiet", "-e", str(code)])
    return venv / "bin" / "python"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=19_205)
    parser.add_argument("--work", type=Path, default=None, help="working folder (kept; first loads reused)")
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--ours", default=None, help="the lake's side at this commit (default: this checkout)")
    args = parser.parse_args()
    work = args.work or Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-lake-{args.symbols}"
    work.mkdir(parents=True, exist_ok=True)
    theirs = baseline_python(work, args.baseline)
    ours = baseline_python(work, args.ours, "ours") if args.ours else Path(sys.executable)
    print(f"{args.symbols:,} symbols; baseline {args.baseline} (one DuckDB file); work folder {work}", flush=True)

    load = {lake: first_load(args, py, work / f"first-{name}", lake)
            for lake, py, name in ((False, theirs, "file"), (True, ours, "lake"))}
    print(f"first load, Ultimate: file {load[False]:.1f} s, lake {load[True]:.1f} s: "
          f"{load[True] / load[False]:.2f}x (goal <= 1.1x)", flush=True)
    day = {lake: daily(args, py, work / f"first-{name}", work / f"daily-{name}", lake)
           for lake, py, name in ((False, theirs, "file"), (True, ours, "lake"))}
    print(f"daily sync, Premium: file {day[False]:.1f} s, lake {day[True]:.1f} s: "
          f"{day[True] / day[False]:.2f}x (goal <= 1.1x)", flush=True)

    asked = {lake: queries(py, work / f"first-{name}", lake)
             for lake, py, name in ((False, theirs, "file"), (True, ours, "lake"))}
    copy_state(work / "first-lake", work / "upkept-lake")  # the lake as the nightly upkeep leaves it
    from stock_assets.warehouse import WarehouseResource

    WarehouseResource(**where(work / "upkept-lake", True)).upkeep(dt.timedelta(days=30))
    upkept = queries(ours, work / "upkept-lake", True)
    print(f"\n{'query (best of 5)':<30}{'rows':>8}{'file ms':>10}{'lake ms':>10}{'lake/file':>11}"
          f"{'upkept ms':>11}{'upkept/file':>13}")
    for name, got in asked[True].items():
        before, after = asked[False][name], upkept[name]
        print(f"{name:<30}{got['rows']:>8,}{1000 * before['s']:>10.1f}{1000 * got['s']:>10.1f}"
              f"{got['s'] / before['s']:>10.2f}x{1000 * after['s']:>11.1f}{after['s'] / before['s']:>12.2f}x")
    size = {lake: storage(work / f"first-{name}", lake) for lake, name in ((False, "file"), (True, "lake"))}
    print(f"\nstorage after the first load: file {size[False][0] / 1e6:,.0f} MB in 1 file; lake "
          f"{size[True][0] / 1e6:,.0f} MB in {size[True][1]:,} files (catalog included)")

    for upkeep in (False, True):
        month = a_month(work / "first-lake", work / f"month-{'upkeep' if upkeep else 'plain'}", upkeep)
        print(f"a month of daily writes, {'nightly upkeep' if upkeep else 'no upkeep':<15}: {month['data_files']:,} "
              f"data files + {month['delete_files']:,} delete files read by the last snapshot; {month['on_disk']:,} "
              f"files ({month['bytes'] / 1e6:,.0f} MB) on disk; {month['snapshots']:,} snapshots", flush=True)


if __name__ == "__main__":
    main()
