"""The warehouse's `market` tables: one definition gives both the DDL and the Arrow schema.

Each table is declared once as a list of `Column(name, duckdb_type, arrow_type,
description)`.
`ensure_schema(conn)` creates what is missing (`CREATE ... IF NOT EXISTS`, so it
is idempotent and cheap), and `arrow_schema(table)` gives the `pyarrow.Schema`
the builders in `warehouse.arrow` produce, so a batch always matches its table
column for column, and `column_schema(table)` the column descriptions the Dagster
UI shows in an asset's Columns table.

Timestamps are stored as naive `TIMESTAMP` in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
import duckdb
import pyarrow as pa

SCHEMA = "market"


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    arrow_type: pa.DataType
    description: str
    nullable: bool = True


@dataclass(frozen=True)
class Table:
    name: str  # qualified: schema.table
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    partitioned_by: str | None = None  # DuckLake writes a file per value of this expression

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def ddl(self) -> str:
        cols = ",\n    ".join(
            f'"{c.name}" {c.sql_type}' + ("" if c.nullable else " NOT NULL") for c in self.columns
        )
        # No PRIMARY KEY: a DuckLake has no constraints but NOT NULL; `upsert` keeps `key` unique.
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n    {cols}\n)"

    def layout(self) -> str | None:
        """The statement that sets the table's file layout, run as the table is created (files written
        before it keep theirs: DuckLake's merge never re-partitions)."""
        return f"ALTER TABLE {self.name} SET PARTITIONED BY ({self.partitioned_by})" if self.partitioned_by else None

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns])

    def column_schema(self) -> dg.TableSchema:
        """The columns as Dagster shows them: name, type, description, constraints."""
        return dg.TableSchema(columns=[
            dg.TableColumn(c.name, c.sql_type, description=c.description,
                           constraints=dg.TableColumnConstraints(nullable=c.nullable, unique=self.key == (c.name,)))
            for c in self.columns])


def _c(name: str, kind: str, description: str, nullable: bool = True) -> Column:
    types = {
        "text": ("VARCHAR", pa.string()),
        "double": ("DOUBLE", pa.float64()),
        "bigint": ("BIGINT", pa.int64()),
        "bool": ("BOOLEAN", pa.bool_()),
        "date": ("DATE", pa.date32()),
        "ts": ("TIMESTAMP", pa.timestamp("us")),
    }
    sql_type, arrow_type = types[kind]
    return Column(name, sql_type, arrow_type, description, nullable)


SYMBOLS = Table(
    f"{SCHEMA}.symbols",
    (
        _c("symbol", "text", 'Ticker as FMP lists it (e.g. BRK-B).', False),
        _c("company_name", "text", 'Company name from the screener.'),
        _c("exchange", "text", "Exchange's full name."),
        _c("exchange_short_name", "text", 'Exchange code: NYSE, NASDAQ or AMEX.'),
        _c("sector", "text", 'Sector from the screener.'),
        _c("industry", "text", 'Industry from the screener.'),
        _c("country", "text", 'Country of the listing company.'),
        _c("market_cap", "double", 'Market capitalisation in USD at the last universe refresh.'),
        _c("beta", "double", 'Beta against the market at the last universe refresh.'),
        _c("price", "double", 'Last price at the last universe refresh (USD).'),
        _c("last_annual_dividend", "double", 'Dividends per share over the last year (USD); 0 for non-payers.'),
        _c("volume", "bigint", "Last session's volume at the last universe refresh."),
        _c("is_etf", "bool", 'True for an ETF.'),
        _c("is_fund", "bool", 'True for a fund.'),
        _c("is_actively_trading", "bool", 'True while the symbol trades.'),
        _c("shard", "text", 'Symbol shard (partition of the per-symbol assets); a pure function of the symbol.', False),
        _c("listed", "bool", "True while the screener lists it; a symbol that leaves is kept, with its data."),
        _c("last_listed", "date", "The day of the last universe refresh that listed it."),
        _c("delisted_date", "date", "Its delisting date, when FMP's delisted-companies gives one."),
        _c("absent_since", "date", "The first session of the refreshes that have not listed it since (NULL while "
                                   "listed): a symbol leaves the universe when FMP says so (delisted, renamed) or "
                                   "after three sessions absent, not for one short screener page."),
        _c("updated_at", "ts", 'When the universe refresh last wrote this row (UTC).', False),
    ),
    ("symbol",),
)

PRICES = Table(
    f"{SCHEMA}.prices",
    (
        _c("symbol", "text", 'Ticker.', False),
        _c("date", "date", 'Trading day of the bar (New York).', False),
        _c("open", "double", 'Opening price (USD); NULL when the source bar lacks it.'),
        _c("high", "double", 'Session high (USD); NULL when the source bar lacks it.'),
        _c("low", "double", 'Session low (USD); NULL when the source bar lacks it.'),
        _c("close", "double", 'Closing price (USD), split-adjusted as FMP served it.', False),
        _c("volume", "bigint", 'Shares traded in the session.'),
        _c("source", "text", 'FMP route that delivered the bar: eod-bulk, batch-quote or historical-price-eod/full.', False),
        _c("loaded_at", "ts", 'When the bar was written (UTC).', False),
    ),
    ("symbol", "date"),
    # A day's cross-section then reads one year's files, not the whole history (histories are written
    # a few symbols at a time, so every unpartitioned file spans every date). Measured on 19,205
    # symbols' five years, after the upkeep (bench/bench_lake_layout.py): one day 643 -> 105 ms, a
    # symbol's history 13 -> 21 ms, the yearly counts unchanged. Sorted by date instead: one day 39 ms,
    # but a symbol's history 147 ms.
    partitioned_by="year(date)",
)

DIVIDENDS = Table(
    f"{SCHEMA}.dividends",
    (
        _c("symbol", "text", 'Ticker.', False),
        _c("ex_date", "date", 'Ex-dividend date.', False),
        _c("record_date", "date", 'Record date.'),
        _c("payment_date", "date", 'Payment date.'),
        _c("declaration_date", "date", 'Declaration date.'),
        _c("dividend", "double", 'Dividend per share as declared (USD).'),
        _c("adj_dividend", "double", 'Dividend per share adjusted for later splits (USD).'),
        _c("yield_pct", "double", 'Dividend yield in percent (0.34 means 0.34%).'),  # percent: 0.34 means 0.34%
        _c("frequency", "text", 'Payment frequency as FMP states it (Quarterly, Monthly...).'),
        _c("kind", "text", "special (FMP's frequency Special or Irregular) or regular: a special and a regular "
                           "dividend can share an ex-date, and both are kept.", False),
        _c("source", "text", 'FMP route that delivered the row: dividends-calendar or dividends.', False),
        _c("loaded_at", "ts", 'When the row was written (UTC).', False),
    ),
    ("symbol", "ex_date", "kind"),
)
SPECIAL_FREQUENCIES = ("Special", "Irregular")

SPLITS = Table(
    f"{SCHEMA}.splits",
    (
        _c("symbol", "text", "Ticker.", False),
        _c("date", "date", "Ex-date: the first session traded in the new shares.", False),
        _c("numerator", "double", "New shares per `denominator` old ones (2 for a 2-for-1 split).", False),
        _c("denominator", "double", "Old shares (10 for a 1-for-10 reverse split).", False),
        _c("loaded_at", "ts", "When the split was written (UTC).", False),
    ),
    ("symbol", "date"),
)

SYMBOL_CHANGES = Table(
    f"{SCHEMA}.symbol_changes",
    (
        _c("old_symbol", "text", "The symbol before the rename.", False),
        _c("new_symbol", "text", "The symbol from `date` on (FMP serves the whole history under it).", False),
        _c("date", "date", "The first day under the new symbol.", False),
        _c("company_name", "text", "The company renamed."),
        _c("loaded_at", "ts", "When the rename was written (UTC).", False),
    ),
    ("old_symbol", "new_symbol", "date"),
)

# Symbols listed on a session that the source itself has no bar for (its end-of-day history
# answered nothing for the day: halted, listed before its first trade): what lets a trading-day
# partition be complete without them, each with the reason, asked again on every run of the day.
BARS_ABSENT = Table(
    f"{SCHEMA}.bars_absent",
    (
        _c("symbol", "text", "Ticker.", False),
        _c("date", "date", "The session FMP had no bar for.", False),
        _c("reason", "text", "What FMP answered.", False),
        _c("asked_at", "ts", "When FMP was last asked (UTC).", False),
    ),
    ("symbol", "date"),
)

# Listed symbols FMP answered with nothing: a history without a bar (listed before its first
# trade), a `profile` of `[]`. Asked again after 1, 2, 4 ... days (at most EMPTY_BACKOFF_MAX_DAYS),
# not every day and not never; the row goes once FMP answers with data.
EMPTY_ANSWERS = Table(
    f"{SCHEMA}.empty_answers",
    (
        _c("dataset", "text", "What was asked: prices (the history) or profile.", False),
        _c("symbol", "text", "Ticker.", False),
        _c("attempts", "bigint", "Answers in a row with nothing in them.", False),
        _c("asked_at", "ts", "When FMP was last asked (UTC).", False),
    ),
    ("dataset", "symbol"),
)
EMPTY_BACKOFF_MAX_DAYS = 32

# Which days of a calendar endpoint are loaded (splits-calendar: from the first
# load's start to the newest day fetched), so a run fetches only the gap.
CALENDAR_LOADS = Table(
    f"{SCHEMA}.calendar_loads",
    (
        _c("endpoint", "text", "FMP calendar endpoint.", False),
        _c("start_date", "date", "First day loaded.", False),
        _c("end_date", "date", "Last day loaded.", False),
        _c("loaded_at", "ts", "When it was last extended (UTC).", False),
    ),
    ("endpoint",),
)

# Same names as records.Profile; a test checks they stay in step. Two layers: the
# columns the company screener also carries are rewritten from the universe refresh
# every day (no call; `screened_at`), the rest come from the full `profile` call
# (`fetched_at`), made when a symbol is new, when its name, sector, industry or
# exchange changed on the screener (`screener_change`), and on its refresh turn.
# Each column's description names its layer.
COMPANY_PROFILES = Table(
    f"{SCHEMA}.company_profiles",
    (
        _c("symbol", "text", 'Ticker.', False),
        _c("price", "double", "Screener, daily: last price (USD)."),
        _c("market_cap", "double", "Screener, daily: market capitalisation in USD."),
        _c("beta", "double", "Screener, daily: beta against the market."),
        _c("last_dividend", "double", "Screener, daily: dividends per share over the last year (USD)."),
        _c("price_range", "text", "Full profile: 52-week range as text, low-high."),
        _c("change", "double", "Full profile: price change on the day (USD)."),
        _c("change_percentage", "double", "Full profile: price change on the day in percent."),
        _c("volume", "bigint", "Screener, daily: last session's volume."),
        _c("average_volume", "bigint", "Full profile: average daily volume."),
        _c("company_name", "text", "Screener, daily: company name."),
        _c("currency", "text", "Full profile: trading currency."),
        _c("cik", "text", "Full profile: SEC Central Index Key."),
        _c("isin", "text", "Full profile: ISIN."),
        _c("cusip", "text", "Full profile: CUSIP."),
        _c("exchange_full_name", "text", "Screener, daily: exchange's full name."),
        _c("exchange", "text", "Screener, daily: exchange code."),
        _c("industry", "text", "Screener, daily: industry."),
        _c("website", "text", "Full profile: company website."),
        _c("description", "text", "Full profile: business description."),
        _c("ceo", "text", "Full profile: chief executive."),
        _c("sector", "text", "Screener, daily: sector."),
        _c("country", "text", "Full profile: country."),
        _c("full_time_employees", "bigint", "Full profile: full-time employees."),
        _c("phone", "text", "Full profile: phone number."),
        _c("address", "text", "Full profile: street address."),
        _c("city", "text", "Full profile: city."),
        _c("state", "text", "Full profile: state."),
        _c("zip", "text", "Full profile: postal code."),
        _c("image", "text", "Full profile: logo URL."),
        _c("ipo_date", "date", "Full profile: IPO date."),
        _c("default_image", "bool", "Full profile: true when FMP has no logo of its own for the company."),
        _c("is_etf", "bool", "Full profile: true for an ETF."),
        _c("is_actively_trading", "bool", "Screener, daily: true while the symbol trades."),
        _c("is_adr", "bool", "Full profile: true for an American depositary receipt."),
        _c("is_fund", "bool", "Full profile: true for a fund."),
        _c("fetched_at", "ts", "When the full profile was fetched (UTC).", False),
        _c("screened_at", "ts", "When the screener layer was last written (UTC); NULL until the first universe "
                                "refresh after the full profile."),
        _c("screener_change", "text", "What the screener showed changed since the full profile (e.g. 'sector: "
                                      "Technology -> Energy'): the next sync fetches the full profile again."),
    ),
    ("symbol",),
)

# Append-only log of rows FMP sent that failed validation. The key includes a
# hash of the raw payload, so re-running a partition replaces its rejects
# (with the new run_id) instead of duplicating them.
REJECTED_ROWS = Table(
    f"{SCHEMA}.rejected_rows",
    (
        _c("source", "text", 'FMP endpoint the row came from.', False),
        _c("key", "text", 'What the row was about (symbol, symbol/date).', False),
        _c("reason", "text", 'Why validation rejected it.', False),
        _c("raw_hash", "text", 'Hash of the raw payload, so a re-run replaces rather than duplicates.', False),
        _c("raw", "text", 'The raw row as FMP sent it (JSON).'),  # JSON text
        _c("run_id", "text", 'Dagster run that fetched it.'),
        _c("rejected_at", "ts", 'When it was rejected (UTC).', False),
    ),
    ("source", "key", "reason", "raw_hash"),
)

# Which symbols' full history (dataset 'prices' or 'dividends') is loaded, so a
# shard re-run skips them. A dividend payer with no dividends still gets a row.
HISTORY_LOADS = Table(
    f"{SCHEMA}.history_loads",
    (
        _c("dataset", "text", 'Which history: prices or dividends.', False),
        _c("symbol", "text", 'Ticker.', False),
        _c("start_date", "date", 'First day the load asked for.'),
        _c("end_date", "date", 'Last day the load covered.'),
        _c("loaded_at", "ts", 'When the history was loaded (UTC).', False),
    ),
    ("dataset", "symbol"),
)

# ---- metrics: one row set per materialization (failed ones included) --------
# `partition` is '' for the unpartitioned `symbols`, so it can be part of a key.
_STEP = (_c("run_id", "text", 'Dagster run id.', False), _c("asset", "text", 'Asset materialized.', False), _c("partition", "text", "Partition materialized ('' when unpartitioned).", False))

METRICS_RUNS = Table(
    "metrics.runs",
    (
        *_STEP,
        _c("batch_id", "text", 'The sync or backfill the run belongs to.'),  # the sync or backfill the run belongs to
        _c("batch_kind", "text", 'sync, backfill or manual.'),  # 'sync', 'backfill' or 'manual'
        _c("route", "text", 'FMP route the materialization took.'),
        _c("started_at", "ts", 'Start (UTC).', False),
        _c("ended_at", "ts", 'End (UTC).', False),
        _c("duration_s", "double", 'Wall time in seconds.', False),
        _c("status", "text", 'succeeded or failed.', False),  # 'succeeded' or 'failed'
        _c("items_total", "bigint", 'Items (symbols, batches, days) planned.'),
        _c("items_succeeded", "bigint", 'Items fetched.'),
        _c("items_failed", "bigint", 'Items that failed after retries.'),
        _c("items_skipped", "bigint", 'Items skipped because the warehouse already held them.'),
        _c("rows_written", "bigint", 'Rows written by this materialization.'),
        _c("rejected_rows", "bigint", 'Rows rejected by validation.'),
        _c("api_calls", "bigint", 'FMP calls made.'),
        _c("error", "text", 'The error that ended a failed materialization (key redacted).'),
        _c("revisions_repaired", "bigint", "Stored bars FMP's official answer corrected (a revision, or a quote "
                                           "taken after the close that differed from the end-of-day bar)."),
        _c("snapshot_id", "bigint", "The warehouse's snapshot after this materialization's writes: query it as "
                                    "of then with `stock-assets sql --as-of` (time travel)."),
    ),
    ("run_id", "asset", "partition"),
)

METRICS_PHASES = Table(
    "metrics.phases",
    (
        *_STEP,
        _c("phase", "text", 'plan, fetch or write.', False),
        _c("started_at", "ts", 'Start of the phase (UTC).', False),
        _c("duration_s", "double", 'Seconds spent in the phase.', False),
        _c("items", "bigint", 'Items the phase handled.'),
        _c("items_succeeded", "bigint", 'Items that succeeded.'),
        _c("items_failed", "bigint", 'Items that failed.'),
        _c("items_per_s", "double", 'Throughput in items (symbols) per second.'),
    ),
    ("run_id", "asset", "partition", "phase"),
)

METRICS_API_CALLS = Table(
    "metrics.api_calls",
    (
        *_STEP,
        _c("endpoint", "text", 'FMP endpoint.', False),
        _c("calls", "bigint", 'HTTP calls made (retries included).', False),
        _c("succeeded", "bigint", 'Calls answered with data.'),
        _c("failed", "bigint", 'Calls that failed after retries.'),
        _c("retries", "bigint", 'Retries made.'),
        _c("rate_limited", "bigint", '429s and 200s carrying a limit message.'),  # 429s (and 200s carrying Limit Reach)
        _c("bytes", "bigint", 'Response bytes received.'),
        _c("latency_mean_s", "double", 'Mean latency in seconds.'),
        _c("latency_p50_s", "double", 'Median latency in seconds.'),
        _c("latency_p95_s", "double", '95th-percentile latency in seconds.'),
        _c("limiter_wait_s", "double", 'Seconds waited on the shared rate limiter.'),
    ),
    ("run_id", "asset", "partition", "endpoint"),
)

METRICS_OPTIMIZATIONS = Table(
    "metrics.optimizations",
    (
        *_STEP,
        _c("name", "text", 'The optimization: staleness filter, batched quotes, bulk EOD, holiday skip...', False),
        _c("items_considered", "bigint", 'Items it looked at.'),
        _c("items_skipped", "bigint", 'Items it spared a call.'),
        _c("calls_saved", "bigint", 'Calls it saved.'),
        _c("seconds_saved", "double", "Calls saved divided by the key's pace."),  # calls saved / the pace the key's limit allows
    ),
    ("run_id", "asset", "partition", "name"),
)

METRICS_UPKEEP = Table(
    "metrics.upkeep",
    (
        _c("run_id", "text", "Dagster run id of the upkeep job.", False),
        _c("started_at", "ts", "Start (UTC).", False),
        _c("retention_days", "bigint", "Snapshots older than this were expired.", False),
        _c("snapshots_expired", "bigint", "Snapshots expired (time travel no longer reaches them)."),
        _c("files_deleted", "bigint", "Files deleted: no snapshot kept referenced them."),
        _c("duration_s", "double", "Wall time in seconds."),
        *(_c(f"{name}_{when}", "bigint", f"{what} {when} the upkeep.")
          for when in ("before", "after")
          for name, what in (("data_files", "Parquet files the last snapshot reads,"),
                             ("delete_files", "Delete files of the last snapshot,"),
                             ("files_kept", "Data files kept for every snapshot,"),
                             ("bytes_kept", "Bytes of those files,"),
                             ("snapshots", "Snapshots kept,"))),
    ),
    ("run_id",),
)

TABLES: dict[str, Table] = {
    t.name: t for t in (SYMBOLS, PRICES, DIVIDENDS, SPLITS, SYMBOL_CHANGES, COMPANY_PROFILES, REJECTED_ROWS,
                        HISTORY_LOADS, CALENDAR_LOADS, BARS_ABSENT, EMPTY_ANSWERS,
                        METRICS_RUNS, METRICS_PHASES, METRICS_API_CALLS, METRICS_OPTIMIZATIONS, METRICS_UPKEEP)
}

# Views for the questions users ask of the prices and of the metrics history.
VIEWS = {
    # Every bar with its close adjusted for dividends too (total return): the
    # standard backward cumulative factor, the product over the symbol's later
    # dividends of (1 - dividend / the close before its ex-date), from the
    # stored closes and split-adjusted dividends: no second price table, no call. Two dividends on
    # one ex-date (a special beside a regular) are two factors: the window's peers share their product.
    # Every symbol the warehouse knows, with the symbol its company trades under
    # now (following renames, chains included): join on `symbol`, filter on
    # `current_symbol`, and a query follows a company across its renames.
    "market.symbol_lineage": """
        WITH RECURSIVE chain AS (
            SELECT old_symbol AS symbol, new_symbol AS current_symbol, date AS renamed_on, 1 AS renames
            FROM market.symbol_changes
            UNION ALL
            SELECT c.symbol, n.new_symbol, n.date, c.renames + 1
            FROM chain c JOIN market.symbol_changes n ON n.old_symbol = c.current_symbol AND n.date > c.renamed_on
            WHERE c.renames < 50)
        SELECT symbol, arg_max(current_symbol, renames) AS current_symbol, max(renames) AS renames
        FROM chain GROUP BY symbol
        UNION ALL
        SELECT symbol, symbol, 0 FROM market.symbols
        WHERE symbol NOT IN (SELECT old_symbol FROM market.symbol_changes)""",
    "market.prices_adjusted": """
        WITH factors AS (
            SELECT d.symbol, d.ex_date, 1 - d.adj_dividend / b.close AS f
            FROM market.dividends d
            ASOF JOIN market.prices b ON b.symbol = d.symbol AND d.ex_date > b.date
            WHERE d.adj_dividend > 0 AND b.close > 0),
        cumulative AS (
            SELECT symbol, ex_date,
                   exp(sum(ln(f)) OVER (PARTITION BY symbol ORDER BY ex_date DESC)) AS factor
            FROM factors WHERE f > 0)
        SELECT p.symbol, p.date, p.open, p.high, p.low, p.close, p.volume,
               coalesce(c.factor, 1.0) AS dividend_factor,
               p.close * coalesce(c.factor, 1.0) AS adj_close
        FROM market.prices p
        ASOF LEFT JOIN cumulative c ON c.symbol = p.symbol AND p.date < c.ex_date""",
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
               coalesce(sum(r.revisions_repaired), 0) AS revisions_repaired,
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


def column_schema(name: str) -> dg.TableSchema:
    return table(name).column_schema()


# The company_profiles columns the universe refresh rewrites daily, from these market.symbols
# columns (the screener's). A change in the first four makes the full profile due again.
SCREENER_LAYER = {"company_name": "company_name", "sector": "sector", "industry": "industry",
                  "exchange": "exchange_short_name", "exchange_full_name": "exchange", "price": "price",
                  "market_cap": "market_cap", "beta": "beta", "last_dividend": "last_annual_dividend",
                  "volume": "volume", "is_actively_trading": "is_actively_trading"}
PROFILE_CHANGING = ("company_name", "sector", "industry", "exchange")


# Each table's write guard: a one-row table every upsert into the table updates in its transaction.
# DuckLake has no keys, and two transactions that insert the same new key both commit (appends never
# conflict: measured, a PostgreSQL catalog stored the key twice). Updating the guard makes any two
# concurrent upserts of one table conflict, so the later re-runs and replaces the earlier's rows.
GUARDS = "guards"
SCHEMAS = ("market", "metrics")  # the data's schemas (beside the guards)


def guard(table_name: str) -> str:
    return f"{GUARDS}.{table_name.replace('.', '_')}"


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the schemas, tables, views and write guards that are missing (in the caller's
    transaction: each DDL statement a lake commits is a snapshot, so nothing present is re-created)."""
    missing = missing_objects(conn)  # tables first: the views read them
    for schema in sorted({name.split(".")[0] for name in missing}):
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for name in missing:
        if name in TABLES:
            for statement in filter(None, (TABLES[name].ddl(), TABLES[name].layout())):
                conn.execute(statement)
        elif name in VIEWS:
            conn.execute(f"CREATE OR REPLACE VIEW {name} AS {VIEWS[name]}")
        else:
            conn.execute(f"CREATE TABLE {name} (writes BIGINT NOT NULL)")
            conn.execute(f"INSERT INTO {name} VALUES (0)")


def missing_objects(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """The warehouse's tables, views and write guards not present in the database `conn` uses."""
    present = {f"{s}.{t}" for s, t in conn.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "UNION ALL SELECT schema_name, view_name FROM duckdb_views() WHERE database_name = current_database()"
    ).fetchall()}
    return [name for name in [*TABLES, *VIEWS, *map(guard, TABLES)] if name not in present]
