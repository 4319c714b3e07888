"""What `Lake.read_consistently` adds to a query on the local catalog (not a test).

    .venv/bin/python bench/bench_read_check.py data/stocks.sqlite    # a lake `stock-assets sync` made

Each query is timed side by side on one read-only connection, best of 20: read as DuckDB answers it
(unchecked), and as the platform and `stock-assets sql` read it (the catalog's last snapshot read
before and after: checked). Printed: the milliseconds and what the check added.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from stock_assets.warehouse import WarehouseResource

QUERIES = {
    "README 1: the last five syncs": "SELECT batch_id, started_at FROM metrics.sync_summary "
                                     "WHERE batch_kind = 'sync' ORDER BY started_at DESC LIMIT 5",
    "one symbol's history": "SELECT * FROM market.prices WHERE symbol = (SELECT min(symbol) FROM market.symbols) "
                            "ORDER BY date",
    "rows and mean close by year": "SELECT year(date), count(*), avg(close) FROM market.prices GROUP BY 1 ORDER BY 1",
}


def best_of(run: Callable[[], object], times: int = 20) -> float:
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    lake = WarehouseResource(database=sys.argv[1])
    conn = lake.connect(read_only=True)
    print(f"{'query (best of 20)':<32}{'unchecked ms':>14}{'checked ms':>12}{'added ms':>10}")
    for name, sql in QUERIES.items():
        unchecked = best_of(lambda: conn.execute(sql).fetchall())
        checked = best_of(lambda: lake.read_consistently(conn, lambda: conn.execute(sql).fetchall()))
        print(f"{name:<32}{1000 * unchecked:>14.1f}{1000 * checked:>12.1f}{1000 * (checked - unchecked):>10.1f}")


if __name__ == "__main__":
    main()
