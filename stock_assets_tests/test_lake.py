"""The warehouse as a lake, as its users meet it: the upkeep job, `stock-assets sql` (now and as
of a past snapshot or sync), and readers in other processes while writers commit."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from stock_assets.defs.maintenance import warehouse_upkeep
from stock_assets.warehouse import WarehouseResource, prices_table

ROOT = Path(__file__).resolve().parents[1]
DAY = dt.date(2024, 3, 1)


def _bars(symbols, day: dt.date, close: float) -> pa.Table:
    return prices_table([{"symbol": s, "date": day, "open": close, "high": close, "low": close, "close": close,
                          "volume": 1} for s in symbols], "eod-bulk")


@pytest.fixture
def wh(lake_location) -> WarehouseResource:
    """Each test on both catalogs: the local SQLite file, and PostgreSQL."""
    return WarehouseResource(**lake_location, lock_timeout_s=60)


def _files_on_disk(wh: WarehouseResource) -> int:
    return sum(len(files) for _, _, files in os.walk(wh.files_path))


def test_the_upkeep_job_merges_a_months_small_files_and_keeps_the_data_and_recent_time_travel(wh):
    symbols = [f"S{i:03d}" for i in range(200)]
    for day in range(30):  # a month of daily writes, each session's bars then a quarter re-read
        session = DAY + dt.timedelta(days=day)
        wh.write_rows("market.prices", _bars(symbols, session, 10.0))
        wh.write_rows("market.prices", _bars(symbols[:50], session, 11.0))
    before_rows = wh.query("SELECT count(*) AS n, sum(close) AS total FROM market.prices")
    recent = wh.snapshot()
    files_before = _files_on_disk(wh)

    result = warehouse_upkeep.execute_in_process(resources={"warehouse": wh})

    assert result.success
    (figures,) = wh.query("SELECT * FROM metrics.upkeep")
    assert figures["run_id"] == result.run_id and figures["retention_days"] == 30
    assert figures["data_files_before"] >= 60 and figures["delete_files_before"] >= 30
    assert figures["data_files_after"] < figures["data_files_before"] / 5 and figures["delete_files_after"] == 0
    (prices_files,) = wh.query("""SELECT count(*) AS n FROM __ducklake_metadata_lake.ducklake_data_file f
        JOIN __ducklake_metadata_lake.ducklake_table t USING (table_id)
        WHERE t.table_name = 'prices' AND f.end_snapshot IS NULL AND t.end_snapshot IS NULL""")
    assert prices_files["n"] <= 2  # a month of sessions in one or two files
    assert wh.query("SELECT count(*) AS n, sum(close) AS total FROM market.prices") == before_rows
    # Nothing is older than 30 days: every snapshot is kept, and the one before the upkeep still reads.
    assert figures["snapshots_expired"] == 0
    conn = wh.connect(read_only=True, snapshot=recent)
    try:
        assert conn.execute("SELECT count(*), sum(close) FROM market.prices").fetchall() == [
            (before_rows[0]["n"], before_rows[0]["total"])]
    finally:
        conn.close()
    # With no retention, old snapshots expire and the files only they read are deleted from disk.
    warehouse_upkeep.execute_in_process(resources={"warehouse": wh},
                                        run_config={"ops": {"upkeep_warehouse": {"config": {"retention_days": 0}}}})
    assert _files_on_disk(wh) < files_before / 10
    assert wh.query("SELECT count(*) AS n, sum(close) AS total FROM market.prices") == before_rows


def _years_of_each_prices_file(wh: WarehouseResource) -> list[int]:
    """How many years' dates each Parquet file of market.prices that the lake reads now holds."""
    files = [row["data_file"] for row in wh.query(
        "SELECT data_file FROM ducklake_list_files('lake', 'prices', schema => 'market')")]
    return [wh.query("SELECT count(DISTINCT year(date)) AS n FROM read_parquet(?)", [f])[0]["n"] for f in files]


def test_prices_are_filed_by_year_so_a_days_cross_section_reads_one_years_files(wh):
    """Histories are written a few symbols at a time across every date; filed by year, a day's query
    reads that year's files only, as the load leaves them and after the upkeep merged them."""
    sessions = [dt.date(2023, 12, 27) + dt.timedelta(days=d) for d in range(10)]
    for chunk in (["AAA", "BBB"], ["CCC", "DDD"], ["EEE", "FFF"]):  # three history writes, each across two years
        wh.write_rows("market.prices", pa.concat_tables([_bars(chunk, day, 10.0) for day in sessions]))

    assert _years_of_each_prices_file(wh) == [1] * 6
    wh.upkeep(dt.timedelta(days=30))
    assert _years_of_each_prices_file(wh) == [1, 1]  # merged: one file a year
    assert wh.query("SELECT count(*) AS n FROM market.prices WHERE date = DATE '2024-01-02'") == [{"n": 6}]


def _sql(wh: WarehouseResource, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("STOCK_ASSETS_CATALOG", "STOCK_ASSETS_DATA")}
    env["STOCK_ASSETS_DB"] = wh.database
    if wh.catalog:
        env.update(STOCK_ASSETS_CATALOG=wh.catalog, STOCK_ASSETS_DATA=wh.data_path)
    return subprocess.run([sys.executable, "-m", "stock_assets.cli", "sql", *args], capture_output=True,
                          text=True, env=env, cwd=str(ROOT), timeout=120)


def test_stock_assets_sql_answers_read_only_as_a_table_json_or_csv_now_or_as_of_a_past_snapshot(wh):
    wh.write_rows("market.prices", _bars(["AAA", "BBB"], DAY, 10.0))
    first = wh.snapshot()
    wh.write_rows("market.prices", _bars(["AAA"], DAY, 12.5))  # a revision

    table = _sql(wh, "SELECT symbol, close FROM market.prices ORDER BY symbol")
    assert table.returncode == 0, table.stderr
    assert "AAA" in table.stdout and "12.5" in table.stdout and "BBB" in table.stdout
    as_json = _sql(wh, "--json", "SELECT symbol, close, date FROM market.prices ORDER BY symbol")
    assert json.loads(as_json.stdout) == [{"symbol": "AAA", "close": 12.5, "date": "2024-03-01"},
                                          {"symbol": "BBB", "close": 10.0, "date": "2024-03-01"}]
    as_csv = _sql(wh, "--csv", "--as-of", str(first), "SELECT symbol, close FROM market.prices ORDER BY symbol")
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [["symbol", "close"], ["AAA", "10.0"], ["BBB", "10.0"]]

    refused = _sql(wh, "DELETE FROM market.prices")
    assert refused.returncode == 1 and "read-only" in refused.stderr and "only reads" in refused.stderr
    assert wh.query("SELECT count(*) AS n FROM market.prices") == [{"n": 2}]
    unknown = _sql(wh, "--as-of", "sync-none", "SELECT 1")
    assert unknown.returncode == 2 and "snapshot id" in unknown.stderr


def test_as_of_a_sync_reads_the_lake_that_sync_left(wh):
    """A sync's snapshot is recorded with its metrics: querying as of its id is that sync's warehouse."""
    from stock_assets import metrics
    from stock_assets.fmp.accounting import CallLog
    from stock_assets.run_stats import RunStats

    def a_sync(batch: str, close: float) -> None:
        wh.write_rows("market.prices", _bars(["AAA"], DAY, close))
        stats = RunStats("daily_prices", DAY.isoformat(), CallLog(), 300)
        metrics.record(wh, stats, f"run-{batch}", {"stock_assets/sync": batch}, "succeeded")

    a_sync("sync-1", 10.0)
    a_sync("sync-2", 20.0)
    older = _sql(wh, "--csv", "--as-of", "sync-1", "SELECT close FROM market.prices")
    assert older.stdout.split() == ["close", "10.0"], older.stderr
    assert _sql(wh, "--csv", "SELECT close FROM market.prices").stdout.split() == ["close", "20.0"]


def test_each_materialization_records_the_lake_snapshot_its_writes_left(platform):
    """In its metadata (the UI shows it) and in metrics.runs: the same snapshot, which holds its rows."""
    import dagster as dg

    from stock_assets.defs.assets import assets_for
    from stock_assets.config import Config

    result = dg.materialize(assets_for(Config.from_env()), selection=[dg.AssetKey("symbols")],
                            instance=platform.instance(), resources=platform.resources())
    assert result.success
    (event,) = result.get_asset_materialization_events()
    snapshot = event.materialization.metadata["lake_snapshot"].value
    assert platform.sql("SELECT snapshot_id FROM metrics.runs WHERE run_id = ?", [result.run_id]) == [(snapshot,)]
    listed = platform.sql("SELECT count(*) FROM market.symbols")
    with platform.reader() as conn:
        assert conn.execute(f"SELECT count(*) FROM market.symbols AT (VERSION => {snapshot})").fetchall() == listed
        (made,), = conn.execute("SELECT min(snapshot_id) FROM lake.snapshots() "
                                "WHERE changes['tables_created'] IS NOT NULL").fetchall()
        assert conn.execute(f"SELECT count(*) FROM market.symbols AT (VERSION => {made})").fetchall() == [(0,)]
