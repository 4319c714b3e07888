"""The warehouse as a DuckLake: a SQL catalog and Parquet files, written and read by any number of
processes at once, on one host or many.

DuckLake (DuckDB's table format) keeps the tables' metadata in a catalog database and their rows in
Parquet files under a data path. Every commit is a snapshot: a reader sees the last committed
snapshot and never waits for a writer, writers commit concurrently (a commit that conflicts with
another on the same table fails and is re-run here), and any past snapshot can be read.

* The catalog is a local SQLite file (`STOCK_ASSETS_DB`, default `data/stocks.sqlite`) or, for many
  hosts, PostgreSQL (`STOCK_ASSETS_CATALOG=postgresql://...`). Measured (docs/ducklake-findings.md):
  a DuckDB-file catalog admits one process, even for reads; SQLite in WAL mode with a busy timeout
  takes several writing processes whose conflicts are re-run, and readers that never wait.
* The Parquet files live under `STOCK_ASSETS_DATA` (default: beside the local catalog,
  `<catalog>.files/`); with a PostgreSQL catalog it is required, and is storage every host sees.

Each process opens ONE in-memory DuckDB with the extensions loaded and the lake attached as `lake`
(loading the three extensions costs ~0.26 s, attaching ~0.06 s: too much per statement), and gives
every use a cursor of its own (a cursor is DuckDB's thread-safe connection to the same database).

`query(sql)` reads one committed snapshot. On a local catalog that takes care: DuckDB's SQLite
scanner reads each catalog table of a read-only transaction on a connection of its own, at its own
moment, and DuckLake replaces a data file's delete file in place when rows of it are deleted again,
so a query running while another process commits could join one commit's data files to another's
deletes: a table torn between two snapshots (measured: `SELECT count(*)` of a table whose keys a
writer replaced, 93 of 2,829 reads torn in 40 s). `read_consistently` reads again when a commit
landed meanwhile. (A PostgreSQL catalog's scanner reads one snapshot of the catalog a transaction.)

`transaction(work)` runs `work(conn)` in one transaction and commits; a conflict ("Transaction
conflict", SQLite's "database is locked") rolls back and runs `work` again from the start, with
backoff, for up to `lock_timeout_s`, then ends in `WarehouseLockedError`. `work` must therefore
only touch the warehouse (no side effects outside it). DuckLake has no primary keys: `upsert`
replaces a batch's keys by DELETE + INSERT in the caller's transaction and updates the table's write
guard (`schema.guard`), so two transactions upserting one table conflict even when their keys are new
(appends alone never conflict), the later re-runs, and no key is ever stored twice.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import random
import re
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar
from urllib.parse import urlparse

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from stock_assets.errors import CommandError, ConfigError

from . import extensions
from . import schema as S

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_DATABASE = "data/stocks.sqlite"
ALIAS = "lake"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_MAX_BACKOFF_S = 1.0
_SQLITE_BUSY_MS = 10_000
_OPTIMISTIC_READS = 5  # reads with a commit landing in each are rare: then the read waits its turn
# What a concurrent writer causes, and a re-run cures. Matched by message: DuckDB raises the same
# TransactionException for a transaction that writes two databases, which no re-run cures.
_RETRYABLE = ("Transaction conflict", "database is locked", "could not serialize access", "deadlock detected",
              "pg_type_typname_nsp_index")  # PostgreSQL: two first ATTACHes making DuckLake's tables at once


class WarehouseLockedError(CommandError):
    """The catalog stayed locked, or commits kept conflicting, for longer than `lock_timeout_s`."""


def _is_retryable(error: Exception) -> bool:
    return any(s in str(error) for s in _RETRYABLE)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _dedupe_keep_last(data: pa.Table, key: Sequence[str]) -> pa.Table:
    """Keep one row per key (the last one), so the INSERT cannot write a key twice."""
    n = data.num_rows
    if n < 2:
        return data
    idx = "__upsert_row__"
    keys = data.select(list(key)).append_column(idx, pa.array(range(n), pa.int64()))
    last = keys.group_by(list(key), use_threads=False).aggregate([(idx, "max")])
    if last.num_rows == n:
        return data
    rows = last[f"{idx}_max"].combine_chunks()
    return data.take(rows.take(pc.sort_indices(rows)))


def upsert(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    data: pa.Table,
    key: Sequence[str] | None = None,
    *,
    delete_where: str | None = None,
    params: Sequence[Any] | None = None,
) -> int:
    """Replace exactly the rows of `table` whose key appears in `data`.

    Runs `DELETE ... USING data` on the key, then `INSERT ... SELECT` by column
    name, in the caller's transaction (inside `Lake.transaction`). Rows of
    `data` with a repeated key keep only the last one. `key` defaults to the
    table's declared key (DuckLake enforces none: this, and the table's write guard, keep it one row).

    `delete_where` (a SQL predicate on the table, with `params`) also deletes
    the rows a partition owns before the insert, e.g. `"date = ?"` for a
    trading-day partition whose new data may have fewer rows than before.
    Returns the number of rows inserted.
    """
    if not _IDENT.match(table):
        raise ValueError(f"not a table name: {table!r}")
    key = list(S.table(table).key if key is None else key)
    missing = [k for k in key if k not in data.column_names]
    if missing:
        raise ValueError(f"key columns {missing} not in the data for {table}")
    conn.execute(f"UPDATE {S.guard(table)} SET writes = writes + 1")  # concurrent upserts conflict: schema.guard
    if delete_where:
        conn.execute(f"DELETE FROM {table} WHERE {delete_where}", list(params or []))
    if data.num_rows == 0:
        return 0
    data = _dedupe_keep_last(data, key)
    view = f"__upsert_{uuid.uuid4().hex}"
    conn.register(view, data)
    try:
        on = " AND ".join(f"t.{_quote(k)} = d.{_quote(k)}" for k in key)
        conn.execute(f"DELETE FROM {table} AS t USING {view} AS d WHERE {on}")
        cols = ", ".join(_quote(c) for c in data.column_names)
        conn.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {view}")
    finally:
        conn.unregister(view)
    return data.num_rows


@contextmanager
def _interrupts_stay_interrupts() -> Iterator[None]:
    """Ctrl-C (or SIGTERM turned into KeyboardInterrupt) during a query stays an interruption.

    DuckDB notices the signal mid-query and raises its own `InterruptException`
    ("Query interrupted") in place of the KeyboardInterrupt: Dagster would take
    that for an ordinary step failure and go on to the run's next step.
    """
    try:
        yield
    except duckdb.InterruptException as error:
        raise KeyboardInterrupt(str(error)) from error


def _safe_catalog(url: str) -> str:
    """The PostgreSQL catalog as messages may name it: no user, no password."""
    parsed = urlparse(url)
    return f"postgresql://{parsed.hostname or 'localhost'}:{parsed.port or 5432}{parsed.path}"


class Lake(dg.ConfigurableResource):
    """Where the DuckLake is (catalog and data path), and short, conflict-retrying access to it.

    `WarehouseResource` builds the warehouse's domain on it; nothing here knows a table.
    """

    database: str = Field(default=DEFAULT_DATABASE,
                          description="The local catalog file, SQLite (env STOCK_ASSETS_DB).")
    data_path: str | None = Field(default=None, description=(
        "Folder of the lake's Parquet files (env STOCK_ASSETS_DATA); default beside the local catalog,"
        " required with a PostgreSQL catalog (storage every host sees)."))
    catalog: str | None = Field(default=None, description=(
        "A PostgreSQL catalog, postgresql://user@host:port/db (env STOCK_ASSETS_CATALOG), in place of"
        " the local file: for writers and readers on many hosts."))
    lock_timeout_s: float = Field(default=600.0, description=(
        "How long a transaction is re-run, with backoff, while the catalog is locked or its commit"
        " conflicts with other writers' before `WarehouseLockedError`."))

    # -- where --------------------------------------------------------------

    @property
    def path(self) -> str:
        """The local catalog file (unused with a PostgreSQL catalog)."""
        return os.path.abspath(os.path.expanduser(self.database))

    @property
    def files_path(self) -> str:
        if self.data_path:
            return os.path.join(os.path.abspath(os.path.expanduser(self.data_path)), "")
        if self.catalog:
            raise ConfigError("STOCK_ASSETS_CATALOG names a PostgreSQL catalog, so STOCK_ASSETS_DATA must name "
                              "the folder of the lake's Parquet files (storage every host sees).")
        return self.path + ".files" + os.sep

    def describe(self) -> str:
        """The lake as messages and metadata name it (never a password)."""
        where = _safe_catalog(self.catalog) if self.catalog else self.path
        return f"DuckLake catalog {where}, data {self.files_path}"

    def attach_sql(self, alias: str = ALIAS, *, read_only: bool = False, snapshot: int | None = None) -> str:
        """The `ATTACH` that opens this lake in any DuckDB (the README shows it to users)."""
        if self.catalog:
            target = "ducklake:postgres:" + self.catalog
            options = []
        else:
            target = "ducklake:sqlite:" + self.path
            options = ["META_JOURNAL_MODE 'WAL'", f"META_BUSY_TIMEOUT {_SQLITE_BUSY_MS}"]
        if self.data_path or not self.exists():
            options.insert(0, f"DATA_PATH {_literal(self.files_path)}")
            if self.data_path:
                options.append("OVERRIDE_DATA_PATH TRUE")  # hosts may mount the shared storage elsewhere
        if read_only:
            options.append("READ_ONLY")
        if snapshot is not None:
            options.append(f"SNAPSHOT_VERSION {int(snapshot)}")
        return f"ATTACH {_literal(target)} AS {alias} ({', '.join(options)})"

    def exists(self) -> bool:
        """The lake has been created (a PostgreSQL catalog is taken to exist)."""
        return bool(self.catalog) or os.path.exists(self.path)

    # -- connections ----------------------------------------------------------

    def connect(self, *, read_only: bool = False, snapshot: int | None = None) -> duckdb.DuckDBPyConnection:
        """A new DuckDB connection with the lake attached as `lake` and in use (the caller closes it).

        For readers: `read_only` never writes the catalog; `snapshot` reads the lake as of that snapshot.
        """
        conn = duckdb.connect()
        try:
            extensions.load(conn)
            if not read_only:
                os.makedirs(self.files_path, exist_ok=True)
            if not self.catalog:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._attach(conn, read_only=read_only, snapshot=snapshot)
            conn.execute(f"USE {ALIAS}")
            return conn
        except BaseException:
            conn.close()
            raise

    def _attach(self, conn: duckdb.DuckDBPyConnection, **options: Any) -> None:
        """ATTACH under the catalog's lock: a new SQLite catalog's file exists before DuckLake has made
        its tables in it, and a second process attaching then would try to make them too. Processes
        on many hosts attaching a new PostgreSQL catalog at once race the same way (one of them finds
        DuckLake's tables "already exist"): the loser attaches again, and finds them made."""
        def attach() -> None:
            with _catalog_lock(None if self.catalog else self.path):
                conn.execute(self.attach_sql(**options))

        try:
            self._retrying(attach, also=("already exists",) if self.catalog else ())
        except duckdb.Error as error:
            raise self._unreachable(error) from error

    def _unreachable(self, error: Exception) -> CommandError:
        text = str(error)
        if self.catalog:
            text = text.replace(self.catalog, _safe_catalog(self.catalog))
            return CommandError(f"Could not open the warehouse's PostgreSQL catalog {_safe_catalog(self.catalog)}: "
                                f"{text}. Check STOCK_ASSETS_CATALOG and that the server is running.")
        if "not a database" in text or "file is not a database" in text:
            return CommandError(f"{self.path} is not a DuckLake catalog (SQLite). An older DuckDB-file warehouse "
                                f"moves to the lake with `stock-assets migrate --from {self.path}`; point "
                                f"STOCK_ASSETS_DB at a new catalog file (default {DEFAULT_DATABASE}).")
        return CommandError(f"Could not open the warehouse ({self.describe()}): {text}")

    def _database(self) -> duckdb.DuckDBPyConnection:
        """This process's DuckDB with the lake attached and the schema ensured (opened once)."""
        key = (os.getpid(), self.path if not self.catalog else _safe_catalog(self.catalog), self.files_path)
        with _OPEN_LOCK:
            conn = _OPEN.get(key)
            if conn is None:
                conn = self.connect()
                self._ensure_schema(conn)
                _OPEN[key] = conn
            return conn

    def _ensure_schema(self, conn: duckdb.DuckDBPyConnection) -> None:
        if not S.missing_objects(conn):
            return
        with _catalog_lock(None if self.catalog else self.path):
            self._retrying(lambda: self._in_transaction(conn, S.ensure_schema))

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection of its own on this process's lake (for one thread, closed after)."""
        cur = self._database().cursor()
        try:
            cur.execute(f"USE {ALIAS}")
            with _interrupts_stay_interrupts():
                yield cur
        finally:
            cur.close()

    # -- reading and writing ----------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts, read from the last committed snapshot."""
        def rows(conn: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
            cursor = conn.execute(sql, params) if params is not None else conn.execute(sql)
            names = [d[0] for d in cursor.description or []]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

        def read() -> list[dict[str, Any]]:
            with self.cursor() as conn:
                return self.read_consistently(conn, lambda: rows(conn))

        return self._retrying(read)

    def read_consistently(self, conn: duckdb.DuckDBPyConnection, read: Callable[[], T]) -> T:
        """`read()` (queries on `conn`, each in a transaction of its own) as of one committed snapshot.

        On a local catalog (see the module's docstring) the read is taken again when a commit landed
        while it ran; after a few such tries it waits for this host's write turn, which every writer
        of a local catalog takes, so that no commit can land. A PostgreSQL catalog needs neither.
        """
        if self.catalog:
            return read()
        before = _last_commit(conn)
        for _ in range(_OPTIMISTIC_READS):
            result = read()
            after = _last_commit(conn)
            if after == before:
                return result
            before = after  # the next try starts from the commit this one saw land
        with _write_turn(self.path):
            return read()

    def transaction(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """`work(conn)` in one transaction, committed; re-run from the start when it conflicts.

        On a local catalog the writers of this host take turns (a file lock, held for the transaction):
        SQLite lets one transaction write at a time, and one begun before another's commit can only
        fail ("database is locked") and run again. Measured on a 600-symbol sync: with retries alone,
        the metrics' commits took 3.3 s each under contention. Readers take no turn.
        """
        def attempt() -> T:
            with _write_turn(None if self.catalog else self.path), self.cursor() as conn:
                return self._in_transaction(conn, work)

        return self._retrying(attempt)

    def write_rows(self, table: str, data: pa.Table, key: Sequence[str] | None = None, *,
                   delete_where: str | None = None, params: Sequence[Any] | None = None) -> int:
        """`upsert` in a transaction of its own. Returns the rows inserted."""
        return self.transaction(lambda conn: upsert(conn, table, data, key, delete_where=delete_where,
                                                    params=params))

    def snapshot(self) -> int:
        """The lake's last committed snapshot id."""
        return self.query(f"SELECT id FROM {ALIAS}.current_snapshot()")[0]["id"]

    # -- upkeep ------------------------------------------------------------------

    def upkeep(self, retention: dt.timedelta) -> LakeUpkeep:
        """Compact the lake and forget what is older than `retention`, with the figures before and after.

        Each step is DuckLake's own, in its own commit (re-run if a sync's commit conflicts):
        the rows inlined in the catalog go to Parquet, files whose rows were largely replaced are
        rewritten, small adjacent files merged; snapshots older than `retention` expire (time travel
        reaches back that far) and the files no snapshot references any more are deleted. Measured on
        30 days of small upserts: 90 files became 1 in 1.2 s (docs/benchmarks.md).
        """
        started = time.monotonic()
        before = self.files()
        cutoff = dt.datetime.now(dt.timezone.utc) - retention
        # The write guards' one row each stays inlined in the catalog: in a Parquet file, every upsert's
        # update of it would write a delete file.
        for step in (*(f"ducklake_flush_inlined_data('{ALIAS}', schema_name => '{schema}')" for schema in S.SCHEMAS),
                     f"ducklake_rewrite_data_files('{ALIAS}', delete_threshold => {REWRITE_DELETED_SHARE})",
                     f"ducklake_merge_adjacent_files('{ALIAS}')"):
            self._retrying(lambda: self._call(f"CALL {step}"))
        expired = self._retrying(lambda: self._call(
            f"CALL ducklake_expire_snapshots('{ALIAS}', older_than => ?)", [cutoff]))
        deleted = self._retrying(lambda: self._call(f"CALL ducklake_cleanup_old_files('{ALIAS}', cleanup_all => true)"))
        return LakeUpkeep(before=before, after=self.files(), snapshots_expired=expired,
                          files_deleted=deleted, seconds=time.monotonic() - started)

    def _call(self, sql: str, params: list | None = None) -> int:
        with _write_turn(None if self.catalog else self.path), self.cursor() as conn:
            return len(conn.execute(sql, params or []).fetchall())

    def files(self) -> LakeFiles:
        """The lake's files now (what the upkeep reports before and after)."""
        meta = f"__ducklake_metadata_{ALIAS}"
        (row,) = self.query(f"""SELECT
            (SELECT count(*) FROM {meta}.ducklake_data_file WHERE end_snapshot IS NULL) AS data_files,
            (SELECT count(*) FROM {meta}.ducklake_delete_file WHERE end_snapshot IS NULL) AS delete_files,
            (SELECT count(*) FROM {meta}.ducklake_data_file) AS files_kept,
            (SELECT coalesce(sum(file_size_bytes), 0) FROM {meta}.ducklake_data_file) AS bytes_kept,
            (SELECT count(*) FROM {meta}.ducklake_snapshot) AS snapshots""")
        return LakeFiles(**row)

    @staticmethod
    def _in_transaction(conn: duckdb.DuckDBPyConnection, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        conn.execute("BEGIN TRANSACTION")
        try:
            result = work(conn)
            conn.execute("COMMIT")
            return result
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except duckdb.Error:
                pass  # already rolled back by the failed COMMIT
            raise

    def _retrying(self, attempt: Callable[[], T], also: tuple[str, ...] = ()) -> T:
        started = time.monotonic()
        delay, tries = 0.02, 0
        while True:
            try:
                return attempt()
            except duckdb.Error as error:
                if not (_is_retryable(error) or any(s in str(error) for s in also)):
                    raise
                tries += 1
                waited = time.monotonic() - started
                if waited >= self.lock_timeout_s:
                    raise WarehouseLockedError(
                        f"The warehouse ({self.describe()}) stayed locked or conflicting for {waited:.1f}s "
                        f"({tries} attempts; lock_timeout_s={self.lock_timeout_s:g}): {error}. Another "
                        f"program holds a write lock on the catalog (an open sqlite3 or psql transaction?): "
                        f"end it, then retry, or raise lock_timeout_s.") from error
                if tries in (10, 50, 200):
                    log.info("warehouse commit retried %d times (%.1fs): %s", tries, waited, error)
                # exponential backoff, "equal jitter", never past the deadline
                pause = delay / 2 + random.uniform(0, delay / 2)
                time.sleep(max(0.0, min(pause, self.lock_timeout_s - waited)))
                delay = min(delay * 2, _MAX_BACKOFF_S)


REWRITE_DELETED_SHARE = 0.25  # a file a quarter of whose rows were replaced is rewritten by the upkeep


@dataclass(frozen=True)
class LakeFiles:
    """The lake's files: those the last snapshot reads, and all kept for time travel."""

    data_files: int  # Parquet files of the current snapshot
    delete_files: int  # files marking rows of those as deleted
    files_kept: int  # data files of every snapshot kept (time travel reads them)
    bytes_kept: int
    snapshots: int


@dataclass(frozen=True)
class LakeUpkeep:
    before: LakeFiles
    after: LakeFiles
    snapshots_expired: int
    files_deleted: int
    seconds: float


_OPEN: dict[tuple, duckdb.DuckDBPyConnection] = {}
_OPEN_LOCK = threading.RLock()


@contextmanager
def _host_lock(catalog_file: str | None, suffix: str) -> Iterator[None]:
    """A lock the processes of this host take on a local catalog (`catalog_file` + `suffix`; the kernel
    drops it when its process dies). None (a PostgreSQL catalog): no lock. Where the folder cannot be
    written (a reader's), none either: that reader makes nothing and writes nothing."""
    if catalog_file is None:
        yield
        return
    try:
        os.makedirs(os.path.dirname(catalog_file), exist_ok=True)
        handle = open(catalog_file + suffix, "a+")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _last_commit(conn: duckdb.DuckDBPyConnection) -> int:
    """The catalog's last snapshot id as committed now (a catalog read of its own, not the snapshot a
    transaction holds). Through DuckDB: a second SQLite library in this process would share its
    POSIX locks on the catalog file, which corrupts it (sqlite.org/howtocorrupt.html, 2.2)."""
    (last,), = conn.execute(f"SELECT max(snapshot_id) FROM __ducklake_metadata_{ALIAS}.ducklake_snapshot"
                            ).fetchall()
    return last


def _write_turn(catalog_file: str | None):
    """This host's writers of a local catalog, one at a time (see `Lake.transaction`)."""
    return _host_lock(catalog_file, ".write-lock")


def _catalog_lock(catalog_file: str | None):
    """Processes on this host attach a local catalog one at a time (a few milliseconds each): two
    first ATTACHes race while DuckLake makes its tables in the new SQLite file. A PostgreSQL
    catalog needs no file lock (its creation is retried like any conflict)."""
    return _host_lock(catalog_file, ".lock")
