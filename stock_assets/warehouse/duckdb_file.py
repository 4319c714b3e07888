"""A DuckDB file shared by processes: short connections, lock waits, bulk upserts.

DuckDB lets ONE process open a database file read-write, or SEVERAL processes
open it read-only, never both at once. Dagster runs steps (and backfill runs)
in separate processes, so every access here is short-lived:

* `write()` opens a read-write connection, ensures the schema (once per process
  per file), runs the caller's statements in ONE transaction and closes the
  connection right after, releasing the file lock for the next process.
* `read()` opens a read-only connection when the file exists. While it is open,
  no process can write (writers wait, retrying), and a reader has to wait while
  a writer holds the file: keep reads short, and fetch results before doing
  anything slow.
* Opening retries DuckDB's lock error ("Could not set lock on file ...
  Conflicting lock is held in ... (PID n)") with exponential backoff and
  jitter. Every 10 s of waiting is logged with the holder's pid and command
  line. The timeout (`lock_timeout_s`) counts how long ONE holder keeps the
  file: the sync's own processes take turns in short transactions, so when
  the holder changes the clock starts again, and a process of the same
  command (a sibling worker) is never reported as an outside holder. When
  one holder outlasts it, `WarehouseLockedError` names the file, the holder
  and what to do.

Within one process DuckDB shares a single database instance among connections
to the same file and refuses a second connection with a different `read_only`
setting; the resource tracks its open connections so a `read()` inside an open
`write()` reuses read-write mode. A `write()` nested inside a `read()` of the
same file in the same thread cannot get the file and ends in
`WarehouseLockedError`: don't nest them that way.

Data goes in as `pyarrow.Table`s (see `warehouse.arrow`) through `upsert`:
`DELETE ... USING` the Arrow table on its key, then `INSERT ... SELECT` by
column name, inside the caller's transaction. Deleting and re-inserting the
same primary keys in one transaction works in DuckDB 2.0 (tested in
`test_warehouse.py`).
"""

from __future__ import annotations

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

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from dagster_duckdb import DuckDBResource
from pydantic import Field

from stock_assets.errors import CommandError

from . import schema as S

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_DATABASE = "data/stocks.duckdb"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_MAX_BACKOFF_S = 1.0


class WarehouseLockedError(CommandError):
    """Another process kept the DuckDB file locked for longer than `lock_timeout_s`."""


@dataclass
class LockWaitStats:
    waits: int = 0  # connections that had to wait for the file lock
    seconds: float = 0.0  # total time spent waiting


_STATS = LockWaitStats()
_STATE_LOCK = threading.RLock()
_OPEN: dict[str, list[Any]] = {}  # path -> [read_only, open connection count] in this process
_SCHEMA_READY: set[tuple[str, int, int]] = set()  # (path, st_dev, st_ino) with the schema ensured


def lock_wait_stats() -> LockWaitStats:
    """How often and how long this process waited for the warehouse file lock."""
    with _STATE_LOCK:
        return LockWaitStats(_STATS.waits, _STATS.seconds)


def _is_lock_error(error: Exception) -> bool:
    text = str(error)
    return (
        "Could not set lock on file" in text
        or "Conflicting lock" in text
        # same process, another thread holds the file in the other read_only mode
        or "different configuration than existing connections" in text
    )


def _file_key(path: str) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_dev, st.st_ino)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _dedupe_keep_last(data: pa.Table, key: Sequence[str]) -> pa.Table:
    """Keep one row per key (the last one), so the INSERT cannot violate the key."""
    n = data.num_rows
    if n < 2:
        return data
    idx = "__upsert_row__"
    keys = data.select(list(key)).append_column(idx, pa.array(range(n), pa.int64()))
    last = keys.group_by(list(key), use_threads=False).aggregate([(idx, "max")])
    if last.num_rows == n:
        return data
    rows = last[f"{idx}_max"]
    rows = rows.combine_chunks()
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
    name, in the caller's transaction (use it inside `WarehouseResource.write()`).
    Rows of `data` with a repeated key keep only the last one. `key` defaults to
    the table's primary key for the `market` tables.

    `delete_where` (a SQL predicate on the table, with `params`) also deletes
    the rows a partition owns before the insert, e.g. `"date = ?"` for a
    trading-day partition whose new data may have fewer rows than before.
    Returns the number of rows inserted.
    """
    if not _IDENT.match(table):
        raise ValueError(f"not a table name: {table!r}")
    if key is None:
        key = S.table(table).key
    key = list(key)
    missing = [k for k in key if k not in data.column_names]
    if missing:
        raise ValueError(f"key columns {missing} not in the data for {table}")
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


def _holder_pid(error: Exception | None) -> int | None:
    match = re.search(r"Conflicting lock is held in .*?\(PID (\d+)\)", str(error or ""))
    return int(match.group(1)) if match else None


def describe_process(pid: int) -> str:
    """`PID n: its command line`, as far as this user may read it."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = " ".join(f.read().replace(b"\0", b" ").decode(errors="replace").split())
    except OSError:
        command = ""
    return f"PID {pid}: {command[:120]}" if command else f"PID {pid}"


def _same_command(pid: int) -> bool:
    """A process of the command this one belongs to: the command and its workers share a
    process group (a shell gives each command its own; a notebook or a SQL client is in another)."""
    try:
        return os.getpgid(pid) == os.getpgid(0)
    except OSError:
        return False


class _LockWait:
    """How long the current holder of the file lock has kept it, and saying so now and then."""

    FIRST_SAY_S = 2.0  # a sync's own turns last well under this
    SAY_EVERY_S = 10.0

    def __init__(self) -> None:
        self.started = self.holder_since = time.monotonic()
        self.next_say = self.started + self.FIRST_SAY_S
        self.holder_pid: int | None = None

    def observe(self, error: Exception | None) -> float:
        """Seconds the current outside holder has kept the file (0 for a process of our own)."""
        pid = _holder_pid(error)
        now = time.monotonic()
        if pid != self.holder_pid or (pid is not None and _same_command(pid)):
            self.holder_pid, self.holder_since = pid, now
        return now - self.holder_since

    def held_s(self) -> float:
        return time.monotonic() - self.holder_since

    def total_s(self) -> float:
        return time.monotonic() - self.started

    def say_if_due(self, path: str) -> None:
        now = time.monotonic()
        if now < self.next_say or (self.holder_pid and _same_command(self.holder_pid)):
            return  # a sibling's turn is no news
        self.next_say = now + self.SAY_EVERY_S
        holder = describe_process(self.holder_pid) if self.holder_pid else "another process"
        log.warning("Waiting %.0fs so far for the DuckDB warehouse %s: it is held by %s. Readers should "
                    "open the read copy (see the README), not the warehouse itself.",
                    self.total_s(), path, holder)


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


class DuckDBFile(DuckDBResource):
    """A DuckDB file opened for a moment at a time, waiting out other processes' locks.

    `WarehouseResource` builds the warehouse's domain on it; nothing here knows a table.
    """

    database: str = Field(
        default=DEFAULT_DATABASE,
        description="Path to the DuckDB warehouse file (env STOCK_ASSETS_DB).",
    )
    lock_timeout_s: float = Field(
        default=600.0,
        description=(
            "How long opening the file waits, retrying with backoff, while one other"
            " process keeps DuckDB's file lock (the clock restarts when the holder changes)."
        ),
    )

    # -- connections ---------------------------------------------------------

    @property
    def path(self) -> str:
        if self._in_memory:
            return self.database
        return os.path.abspath(os.path.expanduser(self.database))

    @property
    def _in_memory(self) -> bool:
        return self.database == ":memory:" or self.database.startswith(("md:", "motherduck:"))

    def _config(self) -> dict[str, Any]:
        return {"custom_user_agent": "dagster", **self.connection_config}

    def _connect(self, read_only: bool) -> tuple[duckdb.DuckDBPyConnection, bool]:
        """Open the file, waiting out other processes' locks. Returns (conn, read_only used)."""
        if self._in_memory:
            return duckdb.connect(self.database, config=self._config()), False
        path = self.path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        start = time.monotonic()
        delay = 0.02
        last_error: Exception | None = None
        wait = _LockWait()
        while True:
            with _STATE_LOCK:
                entry = _OPEN.get(path)
                mode: bool | None = read_only
                if entry and entry[1] > 0:
                    # one database instance per file per process: match its mode
                    mode = entry[0] if (read_only or not entry[0]) else None
                if mode is not None:
                    try:
                        conn = duckdb.connect(path, read_only=mode, config=self._config())
                    except (duckdb.IOException, duckdb.ConnectionException) as error:
                        if not _is_lock_error(error):
                            raise
                        last_error = error
                    else:
                        entry = _OPEN.setdefault(path, [mode, 0])
                        entry[0], entry[1] = mode, entry[1] + 1
                        waited = time.monotonic() - start
                        if last_error is not None:
                            _STATS.waits += 1
                            _STATS.seconds += waited
                            if waited >= 1.0:
                                log.info("waited %.1fs for the DuckDB lock on %s", waited, path)
                        return conn, mode
            held = wait.observe(last_error)
            if held >= self.lock_timeout_s:
                raise WarehouseLockedError(self._locked_message(wait, last_error))
            wait.say_if_due(path)
            # exponential backoff, "equal jitter", never past the deadline
            pause = delay / 2 + random.uniform(0, delay / 2)
            time.sleep(max(0.0, min(pause, self.lock_timeout_s - held)))
            delay = min(delay * 2, _MAX_BACKOFF_S)

    def _locked_message(self, wait: _LockWait, error: Exception | None) -> str:
        holder = ""
        if wait.holder_pid is not None:
            holder = f" ({describe_process(wait.holder_pid)})"
        elif error is not None:
            holder = f" ({error})"
        return (
            f"The DuckDB warehouse file {self.path} is locked by another process{holder};"
            f" gave up after it held the file for {wait.held_s():.1f}s (lock_timeout_s="
            f"{self.lock_timeout_s:g}; {wait.total_s():.1f}s waited in all)."
            " DuckDB lets one process write the file at a time: close the DuckDB CLI,"
            " notebook or other program that has it open (or wait for the running sync"
            " to finish), then retry, or raise lock_timeout_s."
        )

    def _close(self, conn: duckdb.DuckDBPyConnection) -> None:
        with _STATE_LOCK:
            try:
                conn.close()
            finally:
                if not self._in_memory:
                    entry = _OPEN.get(self.path)
                    if entry:
                        entry[1] -= 1
                        if entry[1] <= 0:
                            del _OPEN[self.path]

    def _ensure_schema_once(self, conn: duckdb.DuckDBPyConnection) -> None:
        key = None if self._in_memory else _file_key(self.path)
        if key is not None and key in _SCHEMA_READY:
            return
        S.ensure_schema(conn)
        if key is not None:
            with _STATE_LOCK:
                _SCHEMA_READY.add(key)

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A plain read-write connection (schema ensured, no transaction), like DuckDBResource's."""
        conn, _ = self._connect(read_only=False)
        try:
            self._ensure_schema_once(conn)
            yield conn
        finally:
            self._close(conn)

    @contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short read-write connection running ONE transaction: COMMIT on success,
        ROLLBACK on error; closed (file lock released) right after."""
        conn, _ = self._connect(read_only=False)
        try:
            self._ensure_schema_once(conn)
            conn.execute("BEGIN TRANSACTION")
            try:
                with _interrupts_stay_interrupts():
                    yield conn
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except duckdb.Error:
                    pass
                raise
            with _interrupts_stay_interrupts():
                conn.execute("COMMIT")
        finally:
            self._close(conn)

    @contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short connection for queries: read-only when the file exists (other
        readers may share it; writers wait until it closes, so keep it short)."""
        if self._in_memory:
            with self.get_connection() as conn:
                yield conn
            return
        if not os.path.exists(self.path):
            with self.write():
                pass  # creates the file with the schema
        conn, read_only = self._connect(read_only=True)
        try:
            key = _file_key(self.path)
            if key not in _SCHEMA_READY:
                if S.missing_tables(conn):
                    if read_only:
                        self._close(conn)
                        conn = None
                        with self.write():
                            pass
                        conn, read_only = self._connect(read_only=True)
                    else:
                        S.ensure_schema(conn)
                with _STATE_LOCK:
                    _SCHEMA_READY.add(key)
            with _interrupts_stay_interrupts():
                yield conn
        finally:
            if conn is not None:
                self._close(conn)

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts (the connection is closed before this returns)."""
        with self.read() as conn:
            cursor = conn.execute(sql, params) if params is not None else conn.execute(sql)
            names = [d[0] for d in cursor.description or []]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def write_rows(self, table: str, data: pa.Table, key: Sequence[str] | None = None, *,
                   delete_where: str | None = None, params: Sequence[Any] | None = None) -> int:
        """`upsert` in a transaction of its own. Returns the rows inserted."""
        return self.transaction(lambda conn: upsert(conn, table, data, key, delete_where=delete_where,
                                                    params=params))

    def transaction(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """`work(conn)` in one write transaction, retried when threads of this process collide."""
        for attempt in range(5):
            try:
                with self.write() as conn:
                    return work(conn)
            except duckdb.TransactionException:
                # only threads of this process sharing the file can conflict
                if attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")
