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

# ---- metrics: one row set per materialization (failed ones included) --------
# `partition` is '' for the unpartitioned `symbols`, so it can be part of a key.
_STEP = (_c("run_id", "text", False), _c("asset", "text", False), _c("partition", "text", False))

METRICS_RUNS = Table(
    "metrics.runs",
    (
        *_STEP,
        _c("batch_id", "text"),  # the sync or backfill the run belongs to
        _c("batch_kind", "text"),  # 'sync', 'backfill' or 'manual'
        _c("route", "text"),
        _c("started_at", "ts", False),
        _c("ended_at", "ts", False),
        _c("duration_s", "double", False),
        _c("status", "text", False),  # 'succeeded' or 'failed'
        _c("items_total", "bigint"),
        _c("items_succeeded", "bigint"),
        _c("items_failed", "bigint"),
        _c("items_skipped", "bigint"),
        _c("rows_written", "bigint"),
        _c("rejected_rows", "bigint"),
        _c("api_calls", "bigint"),
        _c("error", "text"),
    ),
    ("run_id", "asset", "partition"),
)

METRICS_PHASES = Table(
    "metrics.phases",
    (
        *_STEP,
        _c("phase", "text", False),
        _c("started_at", "ts", False),
        _c("duration_s", "double", False),
        _c("items", "bigint"),
        _c("items_succeeded", "bigint"),
        _c("items_failed", "bigint"),
        _c("items_per_s", "double"),
    ),
    ("run_id", "asset", "partition", "phase"),
)

METRICS_API_CALLS = Table(
    "metrics.api_calls",
    (
        *_STEP,
        _c("endpoint", "text", False),
        _c("calls", "bigint", False),
        _c("succeeded", "bigint"),
        _c("failed", "bigint"),
        _c("retries", "bigint"),
        _c("rate_limited", "bigint"),  # 429s (and 200s carrying Limit Reach)
        _c("bytes", "bigint"),
        _c("latency_mean_s", "double"),
        _c("latency_p50_s", "double"),
        _c("latency_p95_s", "double"),
        _c("limiter_wait_s", "double"),
    ),
    ("run_id", "asset", "partition", "endpoint"),
)

METRICS_OPTIMIZATIONS = Table(
    "metrics.optimizations",
    (
        *_STEP,
        _c("name", "text", False),
        _c("items_considered", "bigint"),
        _c("items_skipped", "bigint"),
        _c("calls_saved", "bigint"),
        _c("seconds_saved", "double"),  # calls saved / the pace the key's limit allows
    ),
    ("run_id", "asset", "partition", "name"),
)

TABLES: dict[str, Table] = {
    t.name: t for t in (SYMBOLS, PRICES, DIVIDENDS, COMPANY_PROFILES, REJECTED_ROWS, HISTORY_LOADS,
                        METRICS_RUNS, METRICS_PHASES, METRICS_API_CALLS, METRICS_OPTIMIZATIONS)
}

# Views for the questions users ask of the metrics history.
VIEWS = {
    "metrics.sync_summary": """
        WITH calls AS (SELECT run_id, asset, partition, sum(calls) AS calls, sum(retries) AS retries,
                              sum(rate_limited) AS rate_limited, sum(succeeded) AS ok
                       FROM metrics.api_calls GROUP BY ALL),
             saved AS (SELECT run_id, asset, partition, sum(calls_saved) AS calls_saved,
                              sum(seconds_saved) AS seconds_saved, sum(items_skipped) AS items_skipped
                       FROM metrics.optimizations GROUP BY ALL)
        SELECT r.batch_id, any_value(r.batch_kind) AS batch_kind,
               min(r.started_at) AS started_at, max(r.ended_at) AS ended_at,
               epoch(max(r.ended_at) - min(r.started_at)) AS duration_s,
               count(DISTINCT r.run_id) AS runs, count(*) AS steps,
               count(*) FILTER (WHERE r.status = 'failed') AS failed_steps,
               sum(r.items_total) AS items, sum(r.items_succeeded) AS items_succeeded,
               sum(r.items_failed) AS items_failed, sum(r.rows_written) AS rows_written,
               coalesce(sum(c.calls), 0) AS api_calls, coalesce(sum(c.retries), 0) AS retries,
               coalesce(sum(c.rate_limited), 0) AS rate_limited,
               coalesce(sum(s.calls_saved), 0) AS calls_saved,
               coalesce(sum(s.seconds_saved), 0) AS seconds_saved,
               coalesce(sum(r.items_succeeded) / nullif(sum(r.items_succeeded + r.items_failed), 0), 1)
                   AS item_success_rate
        FROM metrics.runs r
        LEFT JOIN calls c USING (run_id, asset, partition)
        LEFT JOIN saved s USING (run_id, asset, partition)
        GROUP BY r.batch_id""",
    "metrics.endpoint_trends": """
        SELECT CAST(r.started_at AS DATE) AS day, a.endpoint, sum(a.calls) AS calls,
               sum(a.succeeded) AS succeeded, sum(a.failed) AS failed, sum(a.retries) AS retries,
               sum(a.rate_limited) AS rate_limited, sum(a.bytes) AS bytes,
               sum(a.latency_mean_s * a.calls) / nullif(sum(a.calls), 0) AS latency_mean_s,
               max(a.latency_p95_s) AS latency_p95_max_s, sum(a.limiter_wait_s) AS limiter_wait_s
        FROM metrics.api_calls a JOIN metrics.runs r USING (run_id, asset, partition)
        GROUP BY ALL""",
    "metrics.savings_by_day": """
        SELECT CAST(r.started_at AS DATE) AS day, o.name, sum(o.items_considered) AS items_considered,
               sum(o.items_skipped) AS items_skipped, sum(o.calls_saved) AS calls_saved,
               sum(o.seconds_saved) AS seconds_saved
        FROM metrics.optimizations o JOIN metrics.runs r USING (run_id, asset, partition)
        GROUP BY ALL""",
    "metrics.slowest_phases": """
        SELECT r.batch_id, p.run_id, p.asset, p.partition, p.phase, p.started_at, p.duration_s,
               p.items, p.items_per_s
        FROM metrics.phases p JOIN metrics.runs r USING (run_id, asset, partition)
        ORDER BY p.duration_s DESC""",
}


def table(name: str) -> Table:
    """Look a table up by `schema.name`, or a `market` table by its bare `name`."""
    qualified = name if "." in name else f"{SCHEMA}.{name}"
    try:
        return TABLES[qualified]
    except KeyError:
        raise KeyError(f"unknown warehouse table {name!r}; known: {sorted(TABLES)}") from None


def arrow_schema(name: str) -> pa.Schema:
    return table(name).arrow_schema()


def ddl_statements() -> list[str]:
    schemas = sorted({name.split(".")[0] for name in TABLES})
    return ([f"CREATE SCHEMA IF NOT EXISTS {schema}" for schema in schemas]
            + [t.ddl() for t in TABLES.values()]
            + [f"CREATE OR REPLACE VIEW {name} AS {sql}" for name, sql in VIEWS.items()])


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the `market` and `metrics` schemas, tables and views (idempotent)."""
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
