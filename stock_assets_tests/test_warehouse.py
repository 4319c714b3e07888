"""The warehouse layer, a DuckLake on real catalogs (a SQLite file, and a PostgreSQL server the tests start) and Parquet files in tmp_path."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from stock_assets.fmp.records import Dividend, EodBar, HistoricalBar, Profile, Quote, Reject, ScreenerRow
from stock_assets.warehouse import (
    TABLES,
    WarehouseLockedError,
    WarehouseResource,
    dividends_table,
    ensure_schema,
    prices_table,
    profiles_table,
    quotes_as_prices,
    symbols_table,
    upsert,
)

ROOT = Path(__file__).resolve().parents[1]
DAY = dt.date(2024, 3, 1)


def _bars(symbols, days, close=1.0):
    return [
        {"symbol": s, "date": DAY + dt.timedelta(days=d), "open": 1.0, "high": 2.0, "low": 0.5,
         "close": close + d, "volume": 100 + d}
        for s in symbols for d in range(days)
    ]


def _snapshot(wh: WarehouseResource, table: str, order: str) -> list[tuple]:
    with wh.cursor() as conn:
        return conn.execute(f"SELECT * EXCLUDE (loaded_at) FROM {table} ORDER BY {order}").fetchall()


@pytest.fixture
def wh(lake_location) -> WarehouseResource:
    """Each test runs on both catalogs: the local SQLite file and PostgreSQL."""
    return WarehouseResource(**lake_location, lock_timeout_s=20)


@pytest.fixture
def local_wh(tmp_path) -> WarehouseResource:
    """The embedded default alone: for what only a local catalog file has (its SQLite lock)."""
    return WarehouseResource(database=str(tmp_path / "sub" / "wh.sqlite"), lock_timeout_s=20)


def _spawn(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT),
        start_new_session=True,  # another program, as a user's notebook or SQL client is
    )


HOLD_LOCK = """
import sys, time, sqlite3
conn = sqlite3.connect(sys.argv[1], isolation_level=None)  # a user's sqlite3 shell, mid-transaction
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
conn.close()
"""


# -- schema --------------------------------------------------------------------


def test_schema_is_complete_and_made_once(wh):
    first = wh.snapshot()  # the schema, made in one commit by the first use
    conn = wh.connect()  # another connection, as another process has: nothing is made again
    try:
        with conn.cursor() as again:
            ensure_schema(again.execute("USE lake"))
        tables = {f"{s}.{t}" for s, t in conn.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'lake' "
            "AND schema_name <> 'guards'").fetchall()}
        guards = conn.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake' "
                              "AND schema_name = 'guards'").fetchall()
        assert tables == set(TABLES) == {
            "market.symbols", "market.prices", "market.dividends", "market.company_profiles",
            "market.rejected_rows", "market.history_loads", "market.splits", "market.calendar_loads",
            "market.symbol_changes", "market.bars_absent", "market.empty_answers",
            "metrics.runs", "metrics.phases", "metrics.api_calls", "metrics.optimizations", "metrics.upkeep"}
        views = {f"{s}.{v}" for s, v in conn.execute(
            "SELECT schema_name, view_name FROM duckdb_views() WHERE database_name = 'lake'").fetchall()}
        assert views == {"metrics.sync_summary", "metrics.endpoint_trends", "metrics.savings_by_day",
                         "metrics.slowest_phases", "market.prices_adjusted", "market.symbol_lineage"}
        profile_cols = [r[0] for r in conn.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = 'lake' AND table_name = 'company_profiles'"
            " ORDER BY column_index").fetchall()]
    finally:
        conn.close()
    assert wh.snapshot() == first
    assert guards == [(len(TABLES),)]  # one write guard a table
    assert profile_cols == list(Profile.model_fields) + ["fetched_at", "screened_at", "screener_change"]
    # A lake has no primary keys: the declared keys are what upsert keeps unique.
    assert TABLES["market.prices"].key == ("symbol", "date")
    assert TABLES["market.dividends"].key == ("symbol", "ex_date", "kind")  # a special beside a regular


def test_the_first_use_creates_the_catalog_and_its_data_folder(tmp_path):
    wh = WarehouseResource(database=str(tmp_path / "new" / "deeper" / "w.sqlite"))  # the embedded default
    assert wh.query("SELECT count(*) AS n FROM market.prices") == [{"n": 0}]
    assert os.path.exists(wh.path) and wh.files_path == wh.path + ".files" + os.sep
    wh.write_rows("market.prices", prices_table(_bars(["AAA"], 2), "eod-bulk"))
    assert wh.query("SELECT count(*) AS n FROM market.prices") == [{"n": 2}]


# -- upsert ----------------------------------------------------------------------


def test_upsert_twice_is_identical_and_overlap_replaces_exactly(wh):
    first = prices_table(_bars(["AAA", "BBB", "CCC"], 5), "eod-bulk")
    assert wh.write_rows("market.prices", first, ["symbol", "date"]) == 15
    once = _snapshot(wh, "market.prices", "symbol, date")
    wh.write_rows("market.prices", first, ["symbol", "date"])
    assert _snapshot(wh, "market.prices", "symbol, date") == once
    assert len(once) == 15

    # overlap: BBB's last 2 days + DDD, with new closes
    overlap = prices_table(
        [b for b in _bars(["BBB"], 5, close=50.0) if b["date"] >= DAY + dt.timedelta(days=3)]
        + _bars(["DDD"], 2, close=70.0),
        "historical-price-eod/full",
    )
    wh.write_rows("market.prices", overlap)  # key defaults to the primary key
    after = {(r[0], r[1]): r for r in _snapshot(wh, "market.prices", "symbol, date")}
    assert len(after) == 17
    before = {(r[0], r[1]): r for r in once}
    for (sym, day), row in after.items():
        replaced = sym == "DDD" or (sym == "BBB" and day >= DAY + dt.timedelta(days=3))
        if replaced:
            assert row[5] >= 50.0 and row[7] == "historical-price-eod/full"  # close, source
        else:
            assert row == before[(sym, day)]


def test_upsert_keeps_last_of_repeated_keys_and_delete_where_scopes_a_partition(wh):
    rows = _bars(["AAA"], 1, close=1.0) + _bars(["AAA"], 1, close=2.0) + _bars(["BBB"], 1)
    assert wh.write_rows("market.prices", prices_table(rows, "batch-quote")) == 2
    assert wh.query("SELECT close FROM market.prices WHERE symbol = 'AAA'") == [{"close": 2.0}]
    # the day's partition re-run without BBB: delete_where removes what the partition owns
    wh.write_rows("market.prices", prices_table(_bars(["AAA"], 1, close=3.0), "batch-quote"),
                  delete_where="date = ?", params=[DAY])
    assert wh.query("SELECT symbol, close FROM market.prices") == [{"symbol": "AAA", "close": 3.0}]


def test_delete_then_insert_same_keys_in_one_transaction(wh):
    data = prices_table(_bars(["AAA", "BBB"], 3), "eod-bulk")

    def three_times(conn):
        for _ in range(3):
            upsert(conn, "market.prices", data, ["symbol", "date"])

    wh.transaction(three_times)
    assert wh.query("SELECT count(*) AS n FROM market.prices") == [{"n": 6}]


def test_two_transactions_upserting_the_same_new_key_at_once_conflict_and_never_store_it_twice(wh):
    """Appends alone never conflict in a lake: without the table's write guard, both would commit."""
    from stock_assets.warehouse.lake import _is_retryable

    wh.snapshot()
    first, second = wh.connect(), wh.connect()
    try:
        for conn in (first, second):
            conn.execute("BEGIN TRANSACTION")
            upsert(conn, "market.prices", prices_table(_bars(["NEW"], 1), "eod-bulk"))
        first.execute("COMMIT")
        with pytest.raises(duckdb.Error) as conflict:
            second.execute("COMMIT")
    finally:
        first.close()
        second.close()
    assert _is_retryable(conflict.value), conflict.value  # Lake.transaction re-runs it
    assert wh.query("SELECT count(*) AS n FROM market.prices") == [{"n": 1}]


def test_failed_write_rolls_back(wh):
    wh.write_rows("market.prices", prices_table(_bars(["AAA"], 2), "eod-bulk"))
    before = wh.snapshot()

    def half_then_boom(conn):
        upsert(conn, "market.prices", prices_table(_bars(["AAA", "ZZZ"], 2, close=9.0), "eod-bulk"))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        wh.transaction(half_then_boom)
    assert wh.snapshot() == before
    assert wh.query("SELECT symbol, max(close) AS c FROM market.prices GROUP BY ALL") == [
        {"symbol": "AAA", "c": 2.0}]


def test_bulk_100k_rows_through_arrow(wh):
    n_sym, n_days = 1000, 100
    symbols = [f"S{i:04d}" for i in range(n_sym)]
    data = pa.table({
        "symbol": pa.array([s for s in symbols for _ in range(n_days)]),
        "date": pa.array([DAY + dt.timedelta(days=d) for _ in symbols for d in range(n_days)], pa.date32()),
        "open": pa.array([1.0] * (n_sym * n_days)),
        "high": pa.array([2.0] * (n_sym * n_days)),
        "low": pa.array([0.5] * (n_sym * n_days)),
        "close": pa.array([1.5] * (n_sym * n_days)),
        "volume": pa.array([10] * (n_sym * n_days), pa.int64()),
        "source": pa.array(["eod-bulk"] * (n_sym * n_days)),
        "loaded_at": pa.array([dt.datetime(2024, 3, 2)] * (n_sym * n_days), pa.timestamp("us")),
    })
    # the path is: register the Arrow table once, one DELETE and one INSERT ... SELECT
    statements: list[str] = []
    registered: list[int] = []
    real_register = duckdb.DuckDBPyConnection.register

    def twice(conn):
        class Spy:
            def execute(self, sql, *a):
                statements.append(sql)
                return conn.execute(sql, *a)

            def register(self, name, table):
                registered.append(table.num_rows)
                return real_register(conn, name, table)

            def unregister(self, name):
                return conn.unregister(name)

        assert upsert(Spy(), "market.prices", data) == 100_000
        # and again: replaces all 100k
        upsert(Spy(), "market.prices", data)

    wh.transaction(twice)
    assert registered == [100_000, 100_000]
    # the write guard, then the key's rows out and the batch in
    assert [s.split()[0] for s in statements] == ["UPDATE", "DELETE", "INSERT"] * 2
    assert "SELECT" in statements[2] and "VALUES" not in statements[2]
    assert wh.query("SELECT count(*) AS n, count(DISTINCT symbol) AS s FROM market.prices") == [
        {"n": 100_000, "s": 1000}]


# -- records round-trip ------------------------------------------------------------


def test_none_fields_round_trip_to_null(wh):
    sparse = Profile.model_validate({"symbol": "ZZZ", "companyName": "", "fullTimeEmployees": "12",
                                     "cik": 320193, "ipoDate": "1980-12-12", "isEtf": False})
    full_at = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    wh.write_rows("market.company_profiles", profiles_table([sparse], full_at))
    row = wh.query("SELECT * FROM market.company_profiles")[0]
    assert row["symbol"] == "ZZZ" and row["company_name"] is None and row["price"] is None
    assert row["full_time_employees"] == 12 and row["cik"] == "320193"
    assert row["ipo_date"] == dt.date(1980, 12, 12) and row["is_etf"] is False
    assert row["fetched_at"] == dt.datetime(2024, 3, 1, 12, 0)  # UTC, naive
    nulls = [k for k, v in row.items() if v is None]
    # The full profile's empty fields, and the screener layer's time and change (not screened yet).
    assert len(nulls) == len(Profile.model_fields) - 5 + 2
    assert row["screened_at"] is None and row["screener_change"] is None

    div = Dividend.model_validate({"symbol": "KO", "date": "2024-03-14", "recordDate": "2024-03-15",
                                   "paymentDate": "2024-04-01", "declarationDate": "",
                                   "adjDividend": 0.485, "dividend": 0.485, "yield": 3.1,
                                   "frequency": "Quarterly"})
    wh.write_rows("market.dividends", dividends_table([div], "dividends-calendar"))
    got = wh.query("SELECT * EXCLUDE (loaded_at) FROM market.dividends")
    assert got == [{"symbol": "KO", "ex_date": dt.date(2024, 3, 14), "record_date": dt.date(2024, 3, 15),
                    "payment_date": dt.date(2024, 4, 1), "declaration_date": None, "dividend": 0.485,
                    "adj_dividend": 0.485, "yield_pct": 3.1, "frequency": "Quarterly", "kind": "regular",
                    "source": "dividends-calendar"}]


def test_price_shapes_and_symbols(wh):
    eod = EodBar.model_validate({"symbol": "AAA", "date": "2024-03-01", "open": "1", "high": 2, "low": 0.5,
                                 "close": 1.5, "adjClose": 1.4, "volume": "2.9909012e7"})
    hist = HistoricalBar.model_validate({"symbol": "BBB", "date": "2024-03-01", "open": 3, "high": 4,
                                         "low": 2, "close": 3.5, "volume": 7})
    wh.write_rows("market.prices", prices_table([eod], "eod-bulk"))
    wh.write_rows("market.prices", prices_table([hist], "historical-price-eod/full"))
    after_close = int(dt.datetime(2024, 3, 1, 21, 5, tzinfo=dt.timezone.utc).timestamp())
    stale = int(dt.datetime(2024, 2, 28, 21, 5, tzinfo=dt.timezone.utc).timestamp())
    quotes = [
        Quote.model_validate({"symbol": "CCC", "price": 10, "open": 9, "dayHigh": 11, "dayLow": 8.5,
                              "volume": 1000, "timestamp": after_close}),
        Quote.model_validate({"symbol": "DDD", "price": 5, "timestamp": stale}),  # did not trade that day
    ]
    qt = quotes_as_prices(quotes, DAY)
    assert qt.num_rows == 1
    wh.write_rows("market.prices", qt)
    rows = {r["symbol"]: r for r in wh.query("SELECT * FROM market.prices")}
    # One meaning per column whatever the route: no adj_close (eod-bulk alone carried it).
    assert "adj_close" not in rows["AAA"] and rows["AAA"]["volume"] == 29_909_012
    assert rows["BBB"]["source"] == "historical-price-eod/full"
    c = rows["CCC"]
    assert (c["date"], c["open"], c["high"], c["low"], c["close"], c["volume"], c["source"]) == (
        DAY, 9.0, 11.0, 8.5, 10.0, 1000, "batch-quote")
    assert {r["symbol"] for r in wh.query("SELECT symbol FROM market.prices WHERE date = ?", [DAY])} == {
        "AAA", "BBB", "CCC"}

    screener = [ScreenerRow.model_validate({"symbol": s, "companyName": s.lower(), "marketCap": 1e9,
                                            "volume": 5.0, "isEtf": "false", "exchangeShortName": "NYSE"})
                for s in ("AAA", "BBB", "CCC")]
    wh.write_rows("market.symbols", symbols_table(screener, lambda s: "shard-a" if s < "C" else "shard-b"))
    assert [r["symbol"] for r in wh.universe()] == ["AAA", "BBB", "CCC"]
    only_b = wh.universe(["shard-b"])
    assert len(only_b) == 1 and only_b[0]["symbol"] == "CCC" and only_b[0]["is_etf"] is False
    assert only_b[0]["volume"] == 5 and only_b[0]["exchange_short_name"] == "NYSE"


def test_rejects_and_history_loads_are_idempotent(wh):
    rejects = [Reject("eod-bulk", "AAA", "close: missing", {"symbol": "AAA", "close": ""}),
               Reject("eod-bulk", "BBB", "date: invalid", "raw,csv,line")]
    assert wh.record_rejects(rejects, "run-1") == 2
    wh.record_rejects(rejects, "run-2")  # the same partition re-run
    rows = wh.query("SELECT key, raw, run_id FROM market.rejected_rows ORDER BY key")
    assert [(r["key"], r["run_id"]) for r in rows] == [("AAA", "run-2"), ("BBB", "run-2")]
    assert json.loads(rows[0]["raw"]) == {"symbol": "AAA", "close": ""}

    assert wh.symbols_needing_history("dividends", ["KO", "PEP", "T"]) == ["KO", "PEP", "T"]
    wh.write_dividend_history(["KO", "PEP"], DAY, [])  # data and its bookkeeping in one transaction
    wh.mark_history_loaded("dividends", ["PEP"], dt.date(2000, 1, 1), DAY)
    wh.mark_history_loaded("prices", ["T"], dt.date(2010, 1, 1), DAY)
    assert wh.symbols_needing_history("dividends", ["KO", "PEP", "T"]) == ["T"]
    assert wh.symbols_needing_history("prices", ["KO", "T"]) == ["KO"]
    # an earlier configured start date means the loaded history is not enough
    assert wh.symbols_needing_history("prices", ["T"], start=dt.date(2005, 1, 1)) == ["T"]
    assert wh.query("SELECT count(*) AS n FROM market.history_loads") == [{"n": 3}]


def test_dagster_resource_with_env_var(tmp_path, monkeypatch):
    from dagster import EnvVar, asset, materialize

    db = tmp_path / "env" / "stocks.sqlite"
    monkeypatch.setenv("STOCK_ASSETS_DB", str(db))

    @asset
    def some_prices(warehouse: WarehouseResource) -> None:
        warehouse.write_rows("market.prices", prices_table(_bars(["AAA"], 2), "eod-bulk"))

    result = materialize([some_prices], resources={"warehouse": WarehouseResource(database=EnvVar("STOCK_ASSETS_DB"))})
    assert result.success
    assert WarehouseResource(database=str(db)).query("SELECT count(*) AS n FROM market.prices") == [{"n": 2}]


# -- locks and processes -----------------------------------------------------------


def test_a_write_waits_while_another_program_holds_the_catalogs_write_lock(local_wh):
    wh = local_wh
    wh.snapshot()  # catalog and schema exist
    holder = _spawn(HOLD_LOCK, wh.path, "1.5")
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.monotonic()
        assert wh.write_rows("market.prices", prices_table(_bars(["AAA"], 3), "eod-bulk")) == 3
        waited = time.monotonic() - start
    finally:
        holder.wait(timeout=30)
    assert holder.returncode == 0, holder.stderr.read()
    assert waited > 0.5  # it waited the holder out, and then committed
    assert wh.query("SELECT count(*) AS n FROM market.prices") == [{"n": 3}]


def test_a_catalog_locked_too_long_is_a_clear_error_and_loses_nothing(local_wh):
    wh = local_wh
    wh.write_rows("market.prices", prices_table(_bars(["AAA"], 1), "eod-bulk"))
    holder = _spawn(HOLD_LOCK, wh.path, "60")
    try:
        assert holder.stdout.readline().strip() == "locked"
        short = WarehouseResource(database=wh.path, lock_timeout_s=0.4)
        with pytest.raises(WarehouseLockedError) as info:
            short.write_rows("market.prices", prices_table(_bars(["BBB"], 1), "eod-bulk"))
        # a reader is not held back by the lock
        assert short.query("SELECT symbol FROM market.prices") == [{"symbol": "AAA"}]
    finally:
        holder.kill()
        holder.wait(timeout=30)
    message = str(info.value)
    assert wh.path in message and "lock_timeout_s" in message and "retry" in message
    assert wh.query("SELECT symbol FROM market.prices") == [{"symbol": "AAA"}]


WRITER = """
import json, os, sys, time, datetime as dt
from stock_assets.warehouse import WarehouseResource, prices_table
location, worker, go = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
wh = WarehouseResource(**location, lock_timeout_s=120)
print("ready", flush=True)
while not os.path.exists(go):  # start all writers together, on a catalog none has made yet
    time.sleep(0.01)
day0 = dt.date(2024, 1, 1)
# each worker owns symbols W<worker>_*, and all write the shared symbols SHARED_* (overlap) in their
# first chunk: new keys, written by four transactions at once
for chunk in range(6):
    rows = []
    for s in range(20 if chunk == 0 else 15):
        sym = f"W{worker}_{chunk}_{s}" if s < 15 else f"SHARED_{s}"
        for d in range(50):
            rows.append({"symbol": sym, "date": day0 + dt.timedelta(days=d), "open": 1.0, "high": 1.0,
                         "low": 1.0, "close": float(worker), "volume": d})
    wh.write_rows("market.prices", prices_table(rows, f"worker-{worker}"))
print("done", flush=True)
"""


def test_four_processes_make_the_lake_and_write_disjoint_and_overlapping_chunks_at_once(wh, lake_location, tmp_path):
    go = tmp_path / "go"
    procs = [_spawn(WRITER, json.dumps(lake_location), str(w), str(go)) for w in range(4)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    go.touch()
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and out.split()[0] == "done", err
    rows = wh.query(
        "SELECT count(*) AS n, count(DISTINCT symbol) AS s,"
        " count(*) FILTER (WHERE symbol LIKE 'SHARED_%') AS shared,"
        " count(DISTINCT (symbol, date)) AS keys FROM market.prices")
    # 4 workers x 6 chunks x 15 own symbols x 50 days, plus 5 shared symbols x 50 days once: no key twice
    assert rows == [{"n": 4 * 6 * 15 * 50 + 5 * 50, "s": 4 * 6 * 15 + 5, "shared": 250, "keys": 18_250}]
    # each own symbol carries its writer's close
    wrong = wh.query("SELECT count(*) AS n FROM market.prices WHERE symbol LIKE 'W%'"
                     " AND close <> CAST(substr(symbol, 2, 1) AS DOUBLE)")
    assert wrong == [{"n": 0}]
    # each of the 24 commits is a snapshot of its own
    assert len(wh.query("SELECT * FROM lake.snapshots() WHERE changes['tables_inserted_into'] IS NOT NULL")) >= 24


REPLACER = """
import json, os, sys, datetime as dt
from stock_assets.warehouse import WarehouseResource, prices_table
location, symbols, stop = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
wh = WarehouseResource(**location, lock_timeout_s=120)
print("ready", flush=True)
n = 0
while not os.path.exists(stop):  # a symbol's 50 bars replaced a commit: deletes in a file already holding some
    bars = [{"symbol": f"S{n % symbols:04d}", "date": dt.date(2024, 1, 1) + dt.timedelta(days=d), "open": 1.0,
             "high": 1.0, "low": 1.0, "close": float(n + 1), "volume": d} for d in range(50)]
    wh.write_rows("market.prices", prices_table(bars, "replacer"))
    n += 1
print(n, flush=True)
"""


def test_a_reader_never_sees_a_table_torn_between_two_commits(wh, lake_location, tmp_path):
    """Readers beside a writer that replaces rows: every count is the table's. On the local catalog,
    without `Lake.read_consistently`, 93 of 2,829 such reads were torn (a file's deletes missing, or a
    commit's new file) in 40 s on a 2-core machine."""
    symbols, reads_each = 3_000, 100
    wh.write_rows("market.prices", prices_table(
        [{"symbol": f"S{s:04d}", "date": dt.date(2024, 1, 1) + dt.timedelta(days=d), "open": 1.0, "high": 1.0,
          "low": 1.0, "close": 0.0, "volume": d} for s in range(symbols) for d in range(50)], "seed"))
    stop, first = tmp_path / "stop", wh.snapshot()
    writer = _spawn(REPLACER, json.dumps(lake_location), str(symbols), str(stop))
    answers: list[int] = []
    try:
        assert writer.stdout.readline().strip() == "ready", writer.stderr.read()

        def read_beside() -> None:  # as many reads, and as long as the writer's first 30 commits take
            while len(answers) < 2 * reads_each or wh.snapshot() < first + 30:
                answers.append(wh.query("SELECT count(*) AS n FROM market.prices")[0]["n"])

        readers = [threading.Thread(target=read_beside) for _ in range(2)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
    finally:
        stop.touch()
        out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    commits = int(out.split()[-1])
    torn = [n for n in answers if n != symbols * 50]
    assert commits >= 30 and len(answers) >= 2 * reads_each and torn == [], (commits, len(answers), torn[:5])


def test_the_universe_refresh_writes_the_screener_layer_and_marks_identity_changes(wh):
    from stock_assets.fmp.records import ScreenerRow
    from stock_assets.defs.partitions import shard_of

    def screener(sector: str, price: float, name: str | None = "Acme Corp") -> list[ScreenerRow]:
        return [ScreenerRow(symbol="ACME", company_name=name, sector=sector, industry="Widgets", price=price,
                            market_cap=price * 1e6, exchange_short_name="NYSE", exchange="New York Stock Exchange"),
                ScreenerRow(symbol="NEWC", company_name="New Co", sector="Energy", price=5.0)]

    fetched = dt.datetime(2024, 3, 1, 12, 0)
    wh.write_universe(screener("Technology", 10.0), shard_of, dt.datetime(2024, 3, 1, 22, 0))
    profile = Profile.model_validate({"symbol": "ACME", "companyName": "Acme Corp", "sector": "Technology",
                                      "industry": "Widgets", "price": 9.5, "ceo": "R. Runner", "exchange": "NYSE"})
    wh.write_profiles([profile], fetched_at=fetched)

    # The price moves: the daily columns follow the screener, the rest and fetched_at stay.
    moved = wh.write_universe(screener("Technology", 12.0, name=None), shard_of, dt.datetime(2024, 3, 4, 22, 0))
    assert (moved.profiles_screened, moved.screener_changes) == (1, {})  # NEWC has no profile yet
    row = wh.query("SELECT * FROM market.company_profiles")[0]
    assert (row["price"], row["market_cap"], row["company_name"], row["ceo"]) == (12.0, 12e6, "Acme Corp",
                                                                                  "R. Runner")
    assert row["fetched_at"] == fetched and row["screened_at"] == dt.datetime(2024, 3, 4, 22, 0)

    # The sector changes: marked for a full profile, and shown at once.
    changed = wh.write_universe(screener("Energy", 12.5), shard_of, dt.datetime(2024, 3, 5, 22, 0))
    assert changed.screener_changes == {"ACME": "sector: Technology -> Energy"}
    (sector, change), = wh._rows("SELECT sector, screener_change FROM market.company_profiles", [])
    assert (sector, change) == ("Energy", "sector: Technology -> Energy")
    assert [s.symbol for s in wh.profile_states() if s.screener_change] == ["ACME"]
    # The full profile clears the mark.
    wh.write_profiles([profile.model_copy(update={"sector": "Energy"})], fetched_at=dt.datetime(2024, 3, 6))
    assert [s.screener_change for s in wh.profile_states()] == [None, None]


def _screened(symbol: str, sector: str | None) -> "ScreenerRow":
    from stock_assets.fmp.records import ScreenerRow

    return ScreenerRow.model_validate({"symbol": symbol, "companyName": f"{symbol} Corp", "sector": sector,
                                       "industry": "Software", "exchangeShortName": "NASDAQ",
                                       "isActivelyTrading": True})


def test_a_sector_changed_across_a_day_the_screener_left_it_empty_is_a_change(wh):
    """X, then null, then Y: the last known value is X, so Y is a change (a full profile is due)."""
    from stock_assets.fmp.records import Profile
    from stock_assets.defs.partitions import shard_of

    wh.write_universe([_screened("AAA", "Technology")], shard_of)
    wh.write_profiles([Profile.model_validate({"symbol": "AAA", "companyName": "AAA Corp", "sector": "Technology"})])
    assert wh.write_universe([_screened("AAA", None)], shard_of).screener_changes == {}
    assert wh.query("SELECT sector FROM market.symbols")[0]["sector"] == "Technology"  # kept, not nulled
    changes = wh.write_universe([_screened("AAA", "Energy")], shard_of).screener_changes
    assert changes == {"AAA": "sector: Technology -> Energy"}


def test_a_symbol_the_screener_leaves_out_stays_listed_until_three_sessions_or_fmps_word(wh):
    from stock_assets.defs.partitions import shard_of

    rows = [_screened(s, "Technology") for s in ("AAA", "BBB", "CCC")]
    wh.write_universe(rows, shard_of, today=dt.date(2026, 11, 30), absent_from=dt.date(2026, 11, 26))
    listed = lambda: sorted(r["symbol"] for r in wh.query("SELECT symbol FROM market.symbols WHERE listed"))  # noqa: E731
    # Monday to Wednesday a short page loses BBB; Tuesday FMP says CCC is delisted.
    wh.write_universe(rows[:1] + rows[2:], shard_of, today=dt.date(2026, 12, 1), absent_from=dt.date(2026, 11, 27))
    assert listed() == ["AAA", "BBB", "CCC"]
    wh.write_universe(rows[:1], shard_of, today=dt.date(2026, 12, 2), absent_from=dt.date(2026, 11, 30),
                      gone=["CCC"])
    assert listed() == ["AAA", "BBB"]
    # Absent since Tuesday 12-01; on Thursday the third session absent begins at 12-01: it leaves.
    wh.write_universe(rows[:1], shard_of, today=dt.date(2026, 12, 3), absent_from=dt.date(2026, 12, 1))
    assert listed() == ["AAA"]
    # Back in the screener: listed again, no longer absent.
    wh.write_universe(rows[:2], shard_of, today=dt.date(2026, 12, 4), absent_from=dt.date(2026, 12, 2))
    assert listed() == ["AAA", "BBB"]
    assert wh.query("SELECT absent_since FROM market.symbols WHERE symbol = 'BBB'") == [{"absent_since": None}]


def test_a_failed_step_credits_no_savings():
    """A skip saves calls only for work that succeeded: the failed step's figures record none."""
    from stock_assets.fmp.accounting import CallLog
    from stock_assets.metrics import metrics_tables
    from stock_assets.run_stats import RunStats

    stats = RunStats("company_profiles", "A1", CallLog(), 750)
    stats.optimized("profile cycle", considered=100, skipped=90, calls_saved=90)
    assert metrics_tables(stats, "r1", {}, "succeeded")["metrics.optimizations"].num_rows == 1
    failed = metrics_tables(stats, "r2", {}, "failed", "boom")
    assert failed["metrics.optimizations"].num_rows == 0
    assert failed["metrics.runs"].num_rows == 1


def test_an_answer_that_lacks_an_unusual_share_of_an_exchange_is_fmps_error():
    """A few delistings a week are ordinary; a lost page of an exchange is not: by hand, 1,000 listed."""
    from stock_assets.defs.assets.universe import unusual_drops

    listed = {"NYSE": {f"N{i}" for i in range(1000)}, "AMEX": {f"A{i}" for i in range(30)}}
    everyone = set().union(*listed.values())
    assert unusual_drops(listed, everyone - {"N1", "N2", "A1"}, set()) == {}  # three delistings
    lost_page = everyone - {f"N{i}" for i in range(500)}
    assert unusual_drops(listed, lost_page, set()) == {"NYSE": 500}
    # What FMP itself says is gone is no error, however many.
    assert unusual_drops(listed, lost_page, {f"N{i}" for i in range(500)}) == {}
