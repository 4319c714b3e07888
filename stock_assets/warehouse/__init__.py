"""The DuckDB warehouse: its schema, the Dagster resource with typed reads and writes, and the
file layer beneath it (short connections shared by processes, lock waits, bulk upserts)."""

from .arrow import (
    SOURCE_BATCH_QUOTE,
    SOURCE_EOD_BULK,
    SOURCE_HISTORICAL,
    dividends_table,
    history_loads_table,
    prices_table,
    profiles_table,
    quotes_as_prices,
    rejects_table,
    symbols_table,
    utc_naive,
)
from .duckdb_file import (
    DEFAULT_DATABASE,
    DuckDBFile,
    WarehouseLockedError,
    lock_wait_stats,
    upsert,
)
from .resource import ProfileState, UniverseWrite, WarehouseResource
from .schema import TABLES, arrow_schema, column_schema, ensure_schema

__all__ = [
    "DEFAULT_DATABASE",
    "DuckDBFile",
    "ProfileState",
    "SOURCE_BATCH_QUOTE",
    "SOURCE_EOD_BULK",
    "SOURCE_HISTORICAL",
    "TABLES",
    "UniverseWrite",
    "WarehouseLockedError",
    "WarehouseResource",
    "arrow_schema",
    "column_schema",
    "dividends_table",
    "ensure_schema",
    "history_loads_table",
    "lock_wait_stats",
    "prices_table",
    "profiles_table",
    "quotes_as_prices",
    "rejects_table",
    "symbols_table",
    "upsert",
    "utc_naive",
]
