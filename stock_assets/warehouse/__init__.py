"""The warehouse, a DuckLake: its schema, the Dagster resource with typed reads and writes, and the
lake beneath it (catalog and Parquet files shared by processes and hosts, commits re-run on
conflict, bulk upserts, snapshots)."""

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
from .lake import DEFAULT_DATABASE, Lake, WarehouseLockedError, upsert
from .resource import ProfileState, UniverseWrite, WarehouseResource
from .schema import TABLES, arrow_schema, column_schema, ensure_schema

__all__ = [
    "DEFAULT_DATABASE",
    "Lake",
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
    "prices_table",
    "profiles_table",
    "quotes_as_prices",
    "rejects_table",
    "symbols_table",
    "upsert",
    "utc_naive",
]
