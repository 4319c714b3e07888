"""`stock-assets migrate`: a warehouse file written by DuckDB 2.0 (stock-assets before the lake) moves
into the lake once, every row with it, checked by count and checksum."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stock_assets.warehouse import TABLES, WarehouseResource
from stock_assets.warehouse.migrate import LEGACY_DUCKDB

# One worker runs the module (make test: --dist loadgroup): DuckDB 2.0.1 is installed for it once.
pytestmark = pytest.mark.xdist_group("migrate")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def legacy_duckdb(tmp_path_factory) -> Path:
    """DuckDB 2.0.1, the version that wrote the warehouse files before the lake, beside this one."""
    target = tmp_path_factory.mktemp("duckdb-legacy")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--target", str(target), f"duckdb=={LEGACY_DUCKDB}"], check=True, timeout=600)
    return target


def _legacy(target: Path, script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(target)}, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _old_ddl() -> list[str]:
    """The tables as a warehouse before the lake had them: primary keys, `prices.adj_close` (since
    dropped), no `dividends.kind` (added later) and no `metrics.runs.snapshot_id` (the lake's)."""
    statements = ["CREATE SCHEMA market", "CREATE SCHEMA metrics"]
    for table in TABLES.values():
        columns = [c for c in table.columns if (table.name, c.name) not in {
            ("market.dividends", "kind"), ("metrics.runs", "snapshot_id")}]
        if table.name == "market.prices":
            columns.insert(6, type(columns[0])("adj_close", "DOUBLE", None, ""))
        key = [k for k in table.key if k != "kind"]
        body = ", ".join(f'"{c.name}" {c.sql_type}' for c in columns)
        statements.append(f"CREATE TABLE {table.name} ({body}, PRIMARY KEY ({', '.join(key)}))")
    return statements


MAKE_OLD = """
import json, sys, duckdb
conn = duckdb.connect(sys.argv[1])
for statement in json.loads(sys.argv[2]):
    conn.execute(statement)
conn.execute('''INSERT INTO market.prices SELECT 'S' || (i % 500), DATE '2020-01-01' + CAST(i // 500 AS INTEGER),
    i / 7.0, i / 3.0, i / 11.0, i / 9.0 + 0.1, i / 13.0, i * 17, 'historical-price-eod/full',
    TIMESTAMP '2026-12-04 21:00:00.123456' FROM range(50000) t(i)''')
conn.execute('''INSERT INTO market.dividends (symbol, ex_date, dividend, adj_dividend, yield_pct, frequency, source,
    loaded_at) VALUES ('KO', DATE '2026-03-02', 0.51, 0.51, 3.1, 'Quarterly', 'dividends', TIMESTAMP '2026-03-01'),
    ('XYZ', DATE '2026-03-02', 2.5, 2.5, NULL, 'Special', 'dividends-calendar', TIMESTAMP '2026-03-01')''')
conn.execute('''INSERT INTO metrics.runs (run_id, asset, partition, batch_id, batch_kind, started_at, ended_at,
    duration_s, status, api_calls) SELECT 'run-' || i, 'daily_prices', '2026-12-0' || (i % 5 + 1), 'sync-' || (i // 3),
    'sync', TIMESTAMP '2026-12-01' + INTERVAL (i) MINUTE, TIMESTAMP '2026-12-01' + INTERVAL (i + 1) MINUTE, 60.5,
    'succeeded', i FROM range(30) t(i)''')
conn.close()
print(duckdb.__version__)
"""

READ_OLD = """
import json, sys, duckdb
conn = duckdb.connect(sys.argv[1], read_only=True)
print(json.dumps({
    "prices": conn.execute("SELECT count(*), CAST(sum(CAST(close * 1000000 AS HUGEINT)) AS BIGINT), min(low), "
                           "max(volume), count(DISTINCT symbol) FROM market.prices").fetchone(),
    "dividends": conn.execute("SELECT symbol, dividend, yield_pct, frequency FROM market.dividends ORDER BY 1").fetchall(),
    "runs": conn.execute("SELECT count(*), sum(api_calls), count(DISTINCT batch_id) FROM metrics.runs").fetchone(),
}))
"""


def _migrate(catalog: Path, source: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stock_assets.cli", "migrate", "--from", str(source)],
                          capture_output=True, text=True, cwd=str(ROOT), timeout=900,
                          env={**os.environ, "STOCK_ASSETS_DB": str(catalog)})


def test_a_duckdb_2_warehouse_moves_into_the_lake_with_every_row_and_its_metrics_history(legacy_duckdb, tmp_path):
    old = tmp_path / "stocks.duckdb"
    assert _legacy(legacy_duckdb, MAKE_OLD, str(old), json.dumps(_old_ddl())).strip() == LEGACY_DUCKDB
    truth = json.loads(_legacy(legacy_duckdb, READ_OLD, str(old)))
    old_bytes = hashlib.sha256(old.read_bytes()).hexdigest()
    catalog = tmp_path / "lake" / "stocks.sqlite"

    done = _migrate(catalog, old)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "row counts and checksums equal" in done.stdout and "left behind: adj_close" in done.stdout
    lake = WarehouseResource(database=str(catalog))
    (prices,) = lake.query("SELECT count(*) AS n, CAST(sum(CAST(close * 1000000 AS HUGEINT)) AS BIGINT) AS c, "
                           "min(low) AS l, max(volume) AS v, count(DISTINCT symbol) AS s FROM market.prices")
    assert list(prices.values()) == truth["prices"]  # exact: integer sums, whatever the order
    assert prices["n"] == 50_000
    dividends = lake.query("SELECT symbol, dividend, yield_pct, frequency, kind FROM market.dividends ORDER BY 1")
    assert [[d["symbol"], d["dividend"], d["yield_pct"], d["frequency"]] for d in dividends] == truth["dividends"]
    assert [d["kind"] for d in dividends] == ["regular", "special"]  # derived on the way
    (runs,) = lake.query("SELECT count(*) AS n, sum(api_calls) AS calls, count(DISTINCT batch_id) AS b, "
                         "count(snapshot_id) AS snapshots FROM metrics.runs")
    assert [runs["n"], runs["calls"], runs["b"]] == truth["runs"] and runs["snapshots"] == 0
    assert lake.query("SELECT count(*) AS n FROM metrics.sync_summary") == [{"n": 10}]  # the history reads
    assert hashlib.sha256(old.read_bytes()).hexdigest() == old_bytes  # the old file untouched

    again = _migrate(catalog, old)  # once: a lake with data is never written over
    assert again.returncode == 1 and "already holds data" in again.stderr
    assert lake.query("SELECT count(*) AS n FROM market.prices") == [{"n": 50_000}]


def test_a_duckdb_file_where_the_lakes_catalog_is_expected_says_to_migrate_and_is_left_alone(tmp_path):
    """STOCK_ASSETS_DB still naming the old warehouse file: a clear error naming the command, nothing written."""
    import duckdb

    from stock_assets.errors import CommandError

    old = tmp_path / "stocks.duckdb"
    with duckdb.connect(str(old)) as conn:
        conn.execute("CREATE SCHEMA market; CREATE TABLE market.prices AS SELECT 'AAA' AS symbol, 1.5 AS close")
    before = hashlib.sha256(old.read_bytes()).hexdigest()
    with pytest.raises(CommandError) as info:
        WarehouseResource(database=str(old)).query("SELECT count(*) FROM market.prices")
    assert "stock-assets migrate --from" in str(info.value) and str(old) in str(info.value)
    assert hashlib.sha256(old.read_bytes()).hexdigest() == before
