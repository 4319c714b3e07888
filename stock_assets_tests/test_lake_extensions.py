"""The lake extensions load from their wheels, offline, and a DuckLake on a SQLite catalog works:
two processes write it at once, a reader sees only committed snapshots, and an earlier snapshot
stays readable (time travel). The ground under the lake warehouse, checked on its own."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import duckdb
import pytest

from stock_assets.errors import ConfigError
from stock_assets.warehouse import extensions


def lake(tmp_path) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    extensions.load(conn)
    conn.execute(f"ATTACH 'ducklake:sqlite:{tmp_path / 'catalog.sqlite'}' AS lake "
                 f"(DATA_PATH '{tmp_path / 'data'}/', META_JOURNAL_MODE 'WAL', META_BUSY_TIMEOUT 10000)")
    return conn


def test_each_lake_extension_comes_from_its_wheel_for_this_duckdb():
    for name in extensions.LAKE:
        path = extensions.wheel_path(name)
        assert path and f"v{duckdb.__version__}" in path and path.endswith(f"{name}.duckdb_extension"), name
    conn = duckdb.connect(config={"autoinstall_known_extensions": False})
    extensions.load(conn)
    loaded = {name for (name,) in conn.execute(
        "SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()}
    assert {"ducklake", "sqlite_scanner", "postgres_scanner"} <= loaded


def test_an_extension_that_is_missing_says_what_to_install():
    conn = duckdb.connect(config={"autoinstall_known_extensions": False})
    with pytest.raises(ConfigError, match="pip install 'duckdb-extension-no-such-thing=="):
        extensions.load(conn, ("no_such_thing",))


def test_a_lake_keeps_every_snapshot_and_two_processes_write_it_at_once(tmp_path):
    conn = lake(tmp_path)
    conn.execute("CREATE TABLE lake.t (writer INTEGER, n INTEGER)")
    (first,), = conn.execute("SELECT id FROM lake.current_snapshot()").fetchall()
    writer = textwrap.dedent(f"""
        import random, sys, time, duckdb
        from stock_assets.warehouse import extensions
        conn = duckdb.connect(config={{"autoinstall_known_extensions": False}})
        extensions.load(conn)
        conn.execute("ATTACH 'ducklake:sqlite:{tmp_path / 'catalog.sqlite'}' AS lake "
                     "(DATA_PATH '{tmp_path / 'data'}/', META_BUSY_TIMEOUT 10000)")
        me = int(sys.argv[1])
        for n in range(20):
            # DuckLake retries appends; a busy catalog is retried here, with backoff, for as long as
            # a loaded machine needs (30 quick attempts once gave up on three rows in CI), never silently.
            deadline = time.monotonic() + 60
            while True:
                try:
                    conn.execute("INSERT INTO lake.t VALUES (?, ?)", [me, n])
                    break
                except duckdb.TransactionException as error:
                    if "locked" not in str(error) and "conflict" not in str(error).lower():
                        raise
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(random.uniform(0.01, 0.1))
        """)
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(k)]) for k in (1, 2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert conn.execute("SELECT writer, count(*) FROM lake.t GROUP BY 1 ORDER BY 1").fetchall() == [(1, 20), (2, 20)]
    # The snapshot before any insert still answers as it was.
    assert conn.execute(f"SELECT count(*) FROM lake.t AT (VERSION => {first})").fetchall() == [(0,)]
