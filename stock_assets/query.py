"""`stock-assets sql`: a read-only query of the warehouse, now or as of a past sync.

The lake is attached read-only (`READ_ONLY`: nothing can be written through it), so a query never
waits for a sync and never holds one back: it reads the last committed snapshot, or the snapshot
`--as-of` names:

* a snapshot id (`1234`), as `FROM lake.snapshots()` lists them;
* a sync or backfill id (`sync-20261204-...`): the lake after that batch's last write, as
  recorded in `metrics.runs.snapshot_id`;
* a date (`2026-12-04`) or a moment (`2026-12-04T18:30`), in New York time unless it names its
  zone: the last snapshot committed by then.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from typing import Any, TextIO

import duckdb
import pyarrow as pa

from stock_assets import clock
from stock_assets.errors import CommandError, ConfigError
from stock_assets.warehouse import WarehouseResource
from stock_assets.warehouse.lake import ALIAS


def open_reader(warehouse: WarehouseResource, as_of: str | None = None) -> tuple[duckdb.DuckDBPyConnection, int]:
    """A read-only connection to the lake as of `as_of` (default: now), and the snapshot it reads."""
    if not warehouse.exists():
        raise CommandError(f"No warehouse at {warehouse.path} yet: run `stock-assets sync` first "
                           f"(or set STOCK_ASSETS_DB).")
    conn = warehouse.connect(read_only=True)
    try:
        snapshot = warehouse.read_consistently(conn, lambda: resolve_snapshot(conn, as_of))
        if as_of is not None:
            conn.execute(f"USE memory; DETACH {ALIAS}")
            conn.execute(warehouse.attach_sql(read_only=True, snapshot=snapshot))
            conn.execute(f"USE {ALIAS}")
        return conn, snapshot
    except BaseException:
        conn.close()
        raise


def resolve_snapshot(conn: duckdb.DuckDBPyConnection, as_of: str | None) -> int:
    """The snapshot id `as_of` names (see the module's docstring) on the attached lake."""
    if as_of is None or as_of.isdigit():
        (latest,), = conn.execute(f"SELECT max(snapshot_id) FROM {ALIAS}.snapshots()").fetchall()
        if as_of is not None and int(as_of) > latest:
            raise ConfigError(f"--as-of {as_of}: the lake's last snapshot is {latest}.")
        return latest if as_of is None else int(as_of)
    moment = _moment(as_of)
    if moment is None:
        rows = conn.execute("SELECT max(snapshot_id) FROM metrics.runs WHERE batch_id = ?", [as_of]).fetchall()
        if rows[0][0] is None:
            raise ConfigError(f"--as-of {as_of!r} is neither a snapshot id, a date (YYYY-MM-DD), a moment "
                              f"(YYYY-MM-DDTHH:MM) nor a sync or backfill with a recorded snapshot: see "
                              f"`stock-assets report --history 30` for sync ids.")
        return rows[0][0]
    (snapshot,), = conn.execute(f"SELECT max(snapshot_id) FROM {ALIAS}.snapshots() WHERE snapshot_time <= ?",
                                [moment]).fetchall()
    if snapshot is None:
        raise ConfigError(f"--as-of {as_of}: the warehouse did not exist yet then.")
    return snapshot


def _moment(text: str) -> dt.datetime | None:
    """A date means the end of that day; New York time unless the text names a zone."""
    try:
        if len(text) == 10:
            moment = dt.datetime.combine(dt.date.fromisoformat(text), dt.time.max)
        else:
            moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=clock.NEW_YORK)


def run(warehouse: WarehouseResource, sql: str, *, as_of: str | None = None, output: str = "table",
        out: TextIO = sys.stdout) -> int:
    """Answer `sql` read-only in the `output` form: table, json or csv."""
    conn, _ = open_reader(warehouse, as_of)
    try:
        try:
            table = warehouse.read_consistently(conn, lambda: _answer(conn, sql))
        except duckdb.Error as error:
            raise CommandError(_explain(error)) from error
        if table is None:
            return 0  # a statement with no result (SET, USE ...)
        relation = conn.from_arrow(table)
        if output == "table":
            relation.show(max_rows=10_000, max_width=10_000)
            return 0
        columns, rows = relation.columns, relation.fetchall()
        if output == "json":
            json.dump([dict(zip(columns, row)) for row in rows], out, default=_jsonable, indent=2)
            out.write("\n")
        else:
            writer = csv.writer(out)
            writer.writerow(columns)
            writer.writerows(rows)
        return 0
    finally:
        conn.close()


def _answer(conn: duckdb.DuckDBPyConnection, sql: str) -> pa.Table | None:
    """The query's whole answer, fetched (so that it can be read again when a commit tore it)."""
    relation = conn.sql(sql)
    return None if relation is None else relation.to_arrow_table()


def _explain(error: duckdb.Error) -> str:
    text = str(error)
    if "read-only" in text or "read only" in text:
        return f"{text}\n`stock-assets sql` only reads the warehouse; the sync and backfills write it."
    return text


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
