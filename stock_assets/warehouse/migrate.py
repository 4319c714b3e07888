"""`stock-assets migrate`: a DuckDB-file warehouse moves into the lake once, losslessly.

1. Export: every `market.*` and `metrics.*` table of the old file to Parquet, with its row count and
   checksum (`legacy_export`), under the DuckDB that can open the file: this one when it can, else
   the DuckDB stock-assets used before the lake (`LEGACY_DUCKDB`, DuckDB 2.0, whose files DuckDB
   1.5 cannot open), installed by pip into a cache folder beside the warehouse for the export alone.
2. Load, in ONE lake transaction: each table's rows into the lake's table of that name, column by
   column; a column the old file lacks is empty (or derived: a dividend's `kind`), one the lake no
   longer has (`prices.adj_close`) stays behind.
3. Check, inside that transaction, before it commits: per table, the lake's row count and checksum
   equal the old file's (over the old file's columns the lake keeps), and the Parquet export's equal
   what the old DuckDB counted. Any difference rolls everything back and says which table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import duckdb

from stock_assets.errors import CommandError

from . import legacy_export
from . import schema as S
from .resource import WarehouseResource

LEGACY_DUCKDB = "2.0.1"  # the DuckDB of the warehouse files before the lake
_KIND = f"CASE WHEN frequency IN ({', '.join(repr(f) for f in S.SPECIAL_FREQUENCIES)}) THEN 'special' ELSE 'regular' END"
_DERIVED = {("market.dividends", "kind"): _KIND}


@dataclass(frozen=True)
class TableMoved:
    table: str
    rows: int
    checksum: str  # over the old file's columns the lake keeps
    left_behind: tuple[str, ...]  # old columns the lake no longer has


def migrate(warehouse: WarehouseResource, source: Path, say: Callable[[str], None] = print) -> list[TableMoved]:
    if not source.is_file():
        raise CommandError(f"No DuckDB warehouse file at {source}: name the old file with --from.")
    if warehouse.exists() and _holds_data(warehouse):
        raise CommandError(f"The lake ({warehouse.describe()}) already holds data: migrate into a new, empty lake "
                           f"(point STOCK_ASSETS_DB at a new catalog file).")
    with tempfile.TemporaryDirectory(prefix="stock-assets-migrate-") as folder:
        say(f"Exporting {source} to Parquet ...")
        exported = _export(source, Path(folder), warehouse)
        unknown = sorted(set(exported) - set(S.TABLES))
        if unknown:
            say(f"Not moved (no such table in the lake): {', '.join(unknown)}")
        say(f"Loading {len(exported) - len(unknown)} tables into the lake and checking them ...")
        moved = warehouse.transaction(lambda conn: _load_and_check(conn, exported, Path(folder)))
    return moved


def _holds_data(warehouse: WarehouseResource) -> bool:
    counts = warehouse.query(" UNION ALL ".join(f"SELECT count(*) AS n FROM {name}" for name in S.TABLES))
    return any(row["n"] for row in counts)


def _export(source: Path, folder: Path, warehouse: WarehouseResource) -> dict[str, dict]:
    try:
        conn = duckdb.connect(str(source), read_only=True)
    except duckdb.Error as error:
        if "newer version of DuckDB" not in str(error):
            raise CommandError(f"Could not open {source} as a DuckDB warehouse: {error}") from error
        return _export_with_legacy_duckdb(source, folder, warehouse)
    try:
        return legacy_export.export(conn, str(folder))
    finally:
        conn.close()


def _export_with_legacy_duckdb(source: Path, folder: Path, warehouse: WarehouseResource) -> dict[str, dict]:
    """The file is from a newer DuckDB: export it with DuckDB `LEGACY_DUCKDB`, installed for this alone."""
    target = Path(warehouse.path).parent / "cache" / f"duckdb-{LEGACY_DUCKDB}"
    if not (target / "duckdb").is_dir():
        installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                    "--target", str(target), f"duckdb=={LEGACY_DUCKDB}"],
                                   capture_output=True, text=True)
        if installed.returncode != 0:
            raise CommandError(f"{source} was written by a newer DuckDB, and installing DuckDB {LEGACY_DUCKDB} to read "
                               f"it failed: {installed.stderr.strip()[-500:]}. Install it where pip can reach PyPI, "
                               f"or run `python {legacy_export.__file__} {source} FOLDER` under DuckDB "
                               f"{LEGACY_DUCKDB} yourself.")
    done = subprocess.run([sys.executable, legacy_export.__file__, str(source), str(folder)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(target)})
    if done.returncode != 0:
        raise CommandError(f"Exporting {source} with DuckDB {LEGACY_DUCKDB} failed: {done.stderr.strip()[-1000:]}")
    return json.loads(done.stdout)


def _load_and_check(conn: duckdb.DuckDBPyConnection, exported: dict[str, dict], folder: Path) -> list[TableMoved]:
    moved = []
    for name, old in exported.items():
        if name not in S.TABLES:
            continue
        parquet = str(folder / f"{name}.parquet")
        lake_columns = S.TABLES[name].column_names
        values = [f'"{c}"' if c in old["columns"] else _DERIVED.get((name, c), "NULL") for c in lake_columns]
        quoted = ", ".join(f'"{c}"' for c in lake_columns)
        conn.execute(f"INSERT INTO {name} ({quoted}) SELECT {', '.join(values)} FROM read_parquet(?)", [parquet])
        moved.append(_check(conn, name, old, parquet, lake_columns))
    return moved


def _check(conn: duckdb.DuckDBPyConnection, name: str, old: dict, parquet: str, lake_columns: list[str]) -> TableMoved:
    kept = [c for c in old["columns"] if c in lake_columns]
    (rows_file, all_file, kept_file), = conn.execute(
        f"SELECT count(*), {legacy_export.checksum_sql(old['columns'])}, {legacy_export.checksum_sql(kept)} "
        f"FROM read_parquet(?)", [parquet]).fetchall()
    (rows_lake, kept_lake), = conn.execute(f"SELECT count(*), {legacy_export.checksum_sql(kept)} FROM {name}").fetchall()
    if (rows_file, all_file) != (old["rows"], old["checksum"]):
        raise CommandError(f"{name}: the Parquet export holds {rows_file} rows (checksum {all_file}), the old file "
                           f"{old['rows']} ({old['checksum']}): nothing was moved.")
    if (rows_lake, kept_lake) != (rows_file, kept_file):
        raise CommandError(f"{name}: the lake took {rows_lake} rows (checksum {kept_lake}), the old file holds "
                           f"{rows_file} ({kept_file}): nothing was moved.")
    return TableMoved(name, rows_lake, kept_lake, tuple(c for c in old["columns"] if c not in lake_columns))
