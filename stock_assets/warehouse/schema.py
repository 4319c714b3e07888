"""The warehouse's `market` tables: one definition gives both the DDL and the Arrow schema.

Each table is declared once as a list of `Column(name, duckdb_type, arrow_type)`.
`ensure_schema(conn)` creates what is missing (`CREATE ... IF NOT EXISTS`, so it
is idempotent and cheap), and `arrow_schema(table)` gives the `pyarrow.Schema`
the builders in `warehouse.arrow` produce, so a batch always matches its table
column for column.

Timestamps are stored as naive `TIMESTAMP` in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import duckdb
import pyarrow as pa

SCHEMA = "market"


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    arrow_type: pa.DataType
    nullable: bool = True


@dataclass(frozen=True)
class Table:
    name: str  # qualified: schema.table
    columns: tuple[Column, ...]
    key: tuple[str, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def ddl(self) -> str:
        cols = ",\n    ".join(
            f'"{c.name}" {c.sql_type}' + ("" if c.nullable else " NOT NULL") for c in self.columns
        )
        key = ", ".join(f'"{k}"' for k in self.key)
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n    {cols},\n    PRIMARY KEY ({key})\n)"

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns])


def _c(name: str, kind: str, nullable: bool = True) -> Column:
    types = {
        "text": ("VARCHAR", pa.string()),
        "double": ("DOUBLE", pa.float64()),
        "bigint": ("BIGINT", pa.int64()),
        "bool": ("BOOLEAN", pa.bool_()),
        "date": ("DATE", pa.date32()),
        "ts": ("TIMESTAMP", pa.timestamp("us")),
    }
    sql_type, arrow_type = types[kind]
    return Column(name, sql_type, arrow_type, nullable)


SYMBOLS = Table(
    f"{SCHEMA}.symbols",
    (
        _c("symbol", "text", False),
        _c("company_name", "text"),
        _c("exchange", "text"),
        _c("exchange_short_name", "text"),
        _c("sector", "text"),
        _c("industry", "text"),
        _c("country", "text"),
        _c("market_cap", "double"),
        _c("beta", "double"),
        _c("price", "double"),
        _c("last_annual_dividend", "double"),
        _c("volume", "bigint"),
        _c("is_etf", "bool"),
        _c("is_fund", "bool"),
        _c("is_actively_trading", "bool"),
        _c("shard", "text", False),
        _c("updated_at", "ts", False),
    ),
    ("symbol",),
)

PRICES = Table(
    f"{SCHEMA}.prices",
    (
        _c("symbol", "text", False),
        _c("date", "date", False),
        _c("open", "double"),  # a batch-quote bar may lack open/high/low
        _c("high", "double"),
        _c("low", "double"),
        _c("close", "double", False),
        _c("adj_close", "double"),  # only eod-bulk carries it
        _c("volume", "bigint"),
        _c("source", "text", False),  # 'eod-bulk', 'batch-quote', 'historical-price-eod/full'
        _c("loaded_at", "ts", False),
    ),
    ("symbol", "date"),
)

DIVIDENDS = Table(
    f"{SCHEMA}.dividends",
    (
        _c("symbol", "text", False),
        _c("ex_date", "date", False),
        _c("record_date", "date"),
        _c("payment_date", "date"),
        _c("declaration_date", "date"),
        _c("dividend", "double"),
        _c("adj_dividend", "double"),
        _c("yield_pct", "double"),  # percent: 0.34 means 0.34%
        _c("frequency", "text"),
        _c("source", "text", False),
        _c("loaded_at", "ts", False),
    ),
    ("symbol", "ex_date"),
)

# Same names as records.Profile; a test checks they stay in step.
COMPANY_PROFILES = Table(
    f"{SCHEMA}.company_profiles",
    (
        _c("symbol", "text", False),
        _c("price", "double"),
        _c("market_cap", "double"),
        _c("beta", "double"),
        _c("last_dividend", "double"),
        _c("price_range", "text"),
        _c("change", "double"),
        _c("change_percentage", "double"),
        _c("volume", "bigint"),
        _c("average_volume", "bigint"),
        _c("company_name", "text"),
        _c("currency", "text"),
        _c("cik", "text"),
        _c("isin", "text"),
        _c("cusip", "text"),
        _c("exchange_full_name", "text"),
        _c("exchange", "text"),
        _c("industry", "text"),
        _c("website", "text"),
        _c("description", "text"),
        _c("ceo", "text"),
        _c("sector", "text"),
        _c("country", "text"),
        _c("full_time_employees", "bigint"),
        _c("phone", "text"),
        _c("address", "text"),
        _c("city", "text"),
        _c("state", "text"),
        _c("zip", "text"),
        _c("image", "text"),
        _c("ipo_date", "date"),
        _c("default_image", "bool"),
        _c("is_etf", "bool"),
        _c("is_actively_trading", "bool"),
        _c("is_adr", "bool"),
        _c("is_fund", "bool"),
        _c("fetched_at", "ts", False),
    ),
    ("symbol",),
)

# Append-only log of rows FMP sent that failed validation. The key includes a
# hash of the raw payload, so re-running a partition replaces its rejects
# (with the new run_id) instead of duplicating them.
REJECTED_ROWS = Table(
    f"{SCHEMA}.rejected_rows",
    (
        _c("source", "text", False),
        _c("key", "text", False),
        _c("reason", "text", False),
        _c("raw_hash", "text", False),
        _c("raw", "text"),  # JSON text
        _c("run_id", "text"),
        _c("rejected_at", "ts", False),
    ),
    ("source", "key", "reason", "raw_hash"),
)

# Which symbols' full history (dataset 'prices' or 'dividends') is loaded, so a
# shard re-run skips them. A dividend payer with no dividends still gets a row.
HISTORY_LOADS = Table(
    f"{SCHEMA}.history_loads",
    (
        _c("dataset", "text", False),
        _c("symbol", "text", False),
        _c("start_date", "date"),
        _c("end_date", "date"),
        _c("loaded_at", "ts", False),
    ),
    ("dataset", "symbol"),
)

TABLES: dict[str, Table] = {
    t.name: t for t in (SYMBOLS, PRICES, DIVIDENDS, COMPANY_PROFILES, REJECTED_ROWS, HISTORY_LOADS)
}


def table(name: str) -> Table:
    """Look a table up by `market.name` or bare `name`."""
    qualified = name if "." in name else f"{SCHEMA}.{name}"
    try:
        return TABLES[qualified]
    except KeyError:
        raise KeyError(f"unknown warehouse table {name!r}; known: {sorted(TABLES)}") from None


def arrow_schema(name: str) -> pa.Schema:
    return table(name).arrow_schema()


def ddl_statements() -> list[str]:
    return [f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"] + [t.ddl() for t in TABLES.values()]


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the `market` schema and tables that do not exist yet (idempotent)."""
    for statement in ddl_statements():
        conn.execute(statement)


def missing_tables(conn: duckdb.DuckDBPyConnection, tables: Sequence[str] | None = None) -> list[str]:
    """The warehouse tables not present in the database `conn` is attached to."""
    wanted = list(tables or TABLES)
    present = {
        f"{s}.{t}"
        for s, t in conn.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchall()
    }
    return [name for name in wanted if name not in present]
