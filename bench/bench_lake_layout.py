"""How `market.prices` is filed in the lake, against a DuckDB file of the same rows (not a test).

    .venv/bin/python bench/bench_lake_layout.py                  # 19,205 symbols' five years: ~15 minutes
    .venv/bin/python bench/bench_lake_layout.py --symbols 2000   # same shape, smaller

The same synthetic histories (1,255 sessions a symbol, random closes) are written 20 symbols at a time,
as the first load writes them, into:
- a DuckDB file (this DuckDB, one table, plain INSERTs): the baseline;
- the lake as each layout files them, through the warehouse's own `write_rows` (its DELETE + INSERT
  per chunk): unpartitioned; partitioned by year (the product's); unpartitioned and sorted by date
  when the upkeep merges its files.
Each lake is queried as written and after `upkeep` (DuckLake's merge), best of 5, in its own process:
a day's cross-section (the latest, and one mid-history), one symbol's history, rows and mean close by
year. Printed: the milliseconds and each against the file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 20
SESSIONS = 1255

LAYOUTS = {  # name: (table layout statement or None, sort order the upkeep applies or None)
    "unpartitioned": (None, None),
    "by year (product)": ("PARTITIONED BY (year(date))", None),
    "sorted by date at upkeep": (None, "date"),
}


def sessions() -> list:
    import numpy as np

    days = np.arange(np.datetime64("2021-12-06"), np.datetime64("2026-12-04"))
    return list(days[np.is_busday(days)][-SESSIONS:])


def histories(symbols: list[str], days: list):
    """Each chunk of symbols' whole histories as one Arrow table, in the warehouse's schema."""
    import numpy as np
    import pyarrow as pa

    from stock_assets.warehouse import schema as S

    schema = S.arrow_schema(S.PRICES.name)
    for start in range(0, len(symbols), CHUNK):
        chunk = symbols[start:start + CHUNK]
        n = len(chunk) * len(days)
        close = np.random.default_rng(start).uniform(5, 500, n)
        yield pa.table({
            "symbol": np.repeat(chunk, len(days)), "date": np.tile(np.array(days, "datetime64[D]"), len(chunk)),
            "open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
            "volume": np.random.default_rng(start + 1).integers(0, 10**7, n),
            "source": ["historical-price-eod/full"] * n,
            "loaded_at": pa.array([dt.datetime(2026, 12, 3, 22)] * n, pa.timestamp("us", tz="UTC")),
        }).cast(schema)


def build(kind: str, folder: Path, symbols: int) -> float:
    """Write the histories; returns the seconds it took."""
    import duckdb

    from stock_assets.warehouse import WarehouseResource
    from stock_assets.warehouse import schema as S

    names, days = [f"S{i:05d}" for i in range(symbols)], sessions()
    started = time.perf_counter()
    if kind == "file":
        conn = duckdb.connect(str(folder / "stocks.duckdb"))
        conn.execute("CREATE SCHEMA market")
        conn.execute(S.PRICES.ddl())
        for chunk in histories(names, days):
            conn.execute("INSERT INTO market.prices SELECT * FROM chunk")
        conn.close()
        return time.perf_counter() - started
    layout, sort = LAYOUTS[kind]
    wh = WarehouseResource(database=str(folder / "stocks.sqlite"))
    wh.transaction(lambda c: c.execute("ALTER TABLE market.prices RESET PARTITIONED BY"))
    if layout:
        wh.transaction(lambda c: c.execute(f"ALTER TABLE market.prices SET {layout}"))
    if sort:
        wh.transaction(lambda c: c.execute(f"ALTER TABLE market.prices SET SORTED BY ({sort})"))
    for table in histories(names, days):
        wh.write_rows(S.PRICES.name, table)
    return time.perf_counter() - started


def upkeep(folder: Path) -> float:
    from stock_assets.warehouse import WarehouseResource

    started = time.perf_counter()
    WarehouseResource(database=str(folder / "stocks.sqlite")).upkeep(dt.timedelta(days=0))
    return time.perf_counter() - started


def queries(kind: str, folder: Path, symbols: int) -> dict[str, float]:
    """Best of 5 of each query, in ms."""
    import duckdb

    from stock_assets.warehouse import WarehouseResource

    days = sessions()
    if kind == "file":
        conn = duckdb.connect(str(folder / "stocks.duckdb"), read_only=True)
    else:
        conn = WarehouseResource(database=str(folder / "stocks.sqlite")).connect(read_only=True)
    asked = {
        "cross-section, latest day": f"SELECT * FROM market.prices WHERE date = DATE '{days[-1]}'",
        "cross-section, mid-history": f"SELECT * FROM market.prices WHERE date = DATE '{days[len(days) // 2]}'",
        "one symbol's history": f"SELECT * FROM market.prices WHERE symbol = 'S{symbols // 2:05d}' ORDER BY date",
        "rows and mean close by year": "SELECT year(date), count(*), avg(close) FROM market.prices GROUP BY 1",
    }
    out = {}
    for name, sql in asked.items():
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            conn.execute(sql).fetchall()
            best = min(best, time.perf_counter() - started)
        out[name] = best * 1000
    return out


def in_own_process(symbols: int, *step: str) -> object:
    done = subprocess.run([sys.executable, __file__, "--symbols", str(symbols), "--step", *step],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(step)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=19_205)
    parser.add_argument("--step", nargs=3, metavar=("WHAT", "KIND", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        what, kind, folder = args.step
        step = {"build": build, "upkeep": lambda k, f, n: upkeep(f), "queries": queries}[what]
        print(json.dumps(step(kind, Path(folder), args.symbols)))
        return

    work = Path(tempfile.mkdtemp(prefix="bench-lake-layout-"))
    try:
        rows = {}
        for kind in ["file", *LAYOUTS]:
            folder = work / kind.split()[0]
            folder.mkdir()
            written = in_own_process(args.symbols, "build", kind, str(folder))
            rows[kind] = {"write s": written, "as written": in_own_process(args.symbols, "queries", kind, str(folder))}
            if kind != "file":
                rows[kind]["upkeep s"] = in_own_process(args.symbols, "upkeep", kind, str(folder))
                rows[kind]["upkept"] = in_own_process(args.symbols, "queries", kind, str(folder))
            shutil.rmtree(folder)
            print(f"{kind}: {json.dumps(rows[kind])}", flush=True)
        report(rows, args.symbols)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(rows: dict, symbols: int) -> None:
    base = rows["file"]
    print(f"\n{symbols:,} symbols x {SESSIONS:,} sessions, written {CHUNK} symbols at a time")
    print(f"writes: file {base['write s']:.1f} s; " + "; ".join(
        f"{k} {v['write s']:.1f} s ({v['write s'] / base['write s']:.2f}x), upkeep {v['upkeep s']:.1f} s"
        for k, v in rows.items() if k != "file"))
    print(f"| query | file ms | " + " | ".join(f"{k} (as written / upkept) ms" for k in LAYOUTS) + " |")
    print("|---|---|" + "---|" * len(LAYOUTS))
    for query, ms in base["as written"].items():
        cells = [f"{rows[k]['as written'][query]:.0f} / {rows[k]['upkept'][query]:.0f} "
                 f"({rows[k]['upkept'][query] / ms:.2f}x)" for k in LAYOUTS]
        print(f"| {query} | {ms:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
