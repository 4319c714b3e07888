"""`WarehouseResource`: the warehouse (a DuckLake) as a Dagster resource, with its domain.

Writes are one method per kind of data (`write_prices`, `write_price_history`,
`write_calendar_day`, `write_dividend_history`, `write_profiles`,
`write_universe`, `write_metrics`): each owns its table, its key, its ONE
short transaction, and the rejected rows that came with the data. Reads that
planners and checks need are methods too; no caller hands SQL on `market.*`,
a connection, a table name or a key in or out.

Readers anywhere attach the lake read-only (`stock-assets sql`, or the `ATTACH`
the README gives) and see the last committed snapshot; they never hold a writer
back. Where the lake is and how its commits are retried is `lake.Lake`'s job.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Iterable, Sequence

from dataclasses import dataclass

import pyarrow as pa

from stock_assets import clock
from stock_assets.fmp.records import Delisting, Dividend, Profile, Quote, Reject, ScreenerRow, Split, SymbolChange

from . import schema as S
from .arrow import (
    SOURCE_HISTORICAL, bars_absent_table, calendar_loads_table, dividends_table, history_loads_table, history_prices_table, prices_table,
    profiles_table, quotes_as_prices, rejects_table, splits_table, symbol_changes_table, symbols_table, utc_naive)
from .lake import Lake, upsert

_INSANE_PRICE = """(close <= 0 OR open <= 0 OR high <= 0 OR low <= 0 OR volume < 0
    OR low > least(open, close) OR high < greatest(open, close))"""

# (symbol, dataset) whose stored history is in the shares before a split: one declaration for the
# shard planner and the shard assets, so a shard planned is a shard restated. Two ways to know:
# - the history was loaded (adjusted) to a day before the split's ex-date, and holds rows before it;
# - whatever the dates, its bars jump by the split's ratio on the ex-date: FMP listed the split late,
#   or served the history before adjusting it (both happen), so the rows before are in the old shares.
#   A move within SPLIT_JUMP_TOLERANCE of a ratio that far from 1 is the split, not the market.
SPLIT_JUMP_TOLERANCE = 0.15
_UNADJUSTED_SPLITS = f"""
    WITH on_day AS (
        SELECT s.symbol, s.date, s.numerator / s.denominator AS ratio, p.close
        FROM market.splits s JOIN market.prices p ON p.symbol = s.symbol AND p.date = s.date
        WHERE abs(s.numerator / s.denominator - 1) > {2 * SPLIT_JUMP_TOLERANCE} AND p.close > 0),
    before AS (SELECT symbol, date, close FROM market.prices WHERE symbol IN (SELECT symbol FROM on_day))
    SELECT d.symbol, d.date FROM on_day d ASOF JOIN before b ON b.symbol = d.symbol AND d.date > b.date
    WHERE abs(b.close / d.close / d.ratio - 1) < {SPLIT_JUMP_TOLERANCE}"""
_RESTATEMENTS = f"""
    SELECT DISTINCT h.symbol, h.dataset FROM market.history_loads h
    JOIN market.splits s ON s.symbol = h.symbol AND s.date > h.end_date
    WHERE (h.dataset = 'prices' AND s.date > (SELECT min(date) FROM market.prices p WHERE p.symbol = h.symbol))
       OR (h.dataset = 'dividends'
           AND s.date > (SELECT min(ex_date) FROM market.dividends d WHERE d.symbol = h.symbol))
    UNION
    SELECT DISTINCT u.symbol, h.dataset FROM ({_UNADJUSTED_SPLITS}) u
    JOIN market.history_loads h ON h.symbol = u.symbol
    WHERE h.dataset = 'prices'
       OR u.date > (SELECT min(ex_date) FROM market.dividends d WHERE d.symbol = u.symbol)"""

# A symbol the screener lists today (rows written before the point-in-time universe have NULL).
# The others keep their data but cost no call and count for no coverage.
_LISTED = "coalesce(listed, TRUE)"
_IN_SHARDS = "list_contains(?::VARCHAR[], shard)"  # a run's shards (one, or a range of them)

# Profiles whose name, sector, industry or exchange the screener (view `screened`: today's
# universe rows) shows changed since the last refresh (market.symbols, not yet overwritten).
# A field the screener left empty on either day is no change: FMP omits fields now and then.
_SCREENER_CHANGES = f"""
    SELECT p.symbol, concat_ws('; ', p.screener_change, c.change) AS change
    FROM (SELECT n.symbol, concat_ws('; ', {", ".join(
        f"CASE WHEN o.{s} <> n.{s} THEN '{s}: ' || o.{s} || ' -> ' || n.{s} END"
        for p, s in S.SCREENER_LAYER.items() if p in S.PROFILE_CHANGING)}) AS change
          FROM screened n JOIN market.symbols o USING (symbol)) c
    JOIN market.company_profiles p USING (symbol)
    WHERE c.change <> ''"""
# (DuckLake takes no RETURNING on UPDATE: the changes are read first, then written.)
_MARK_SCREENER_CHANGES = f"""
    UPDATE market.company_profiles p SET screener_change = c.change
    FROM ({_SCREENER_CHANGES}) c WHERE p.symbol = c.symbol"""

# The screener's fields whose change makes a full profile due: one FMP leaves empty for a day keeps
# its last known value, so that a change is seen across the empty day.
_KEPT_WHEN_EMPTY = [S.SCREENER_LAYER[p] for p in S.PROFILE_CHANGING]

# The screener layer of every stored profile the universe lists today: the numbers for all
# (they move daily), the texts where they differ (rewriting a text column costs ~2 s for
# 19,205 rows, against 0.02 s for the numbers).
_TEXT_LAYER = [p for p in S.SCREENER_LAYER if S.COMPANY_PROFILES.column(p).sql_type == "VARCHAR"]
_WRITE_SCREENER_NUMBERS = f"""
    UPDATE market.company_profiles p SET {", ".join(
        f"{p} = coalesce(n.{s}, p.{p})" for p, s in S.SCREENER_LAYER.items() if p not in _TEXT_LAYER)},
        screened_at = ?
    FROM screened n WHERE p.symbol = n.symbol"""  # no RETURNING: it cost 2 s for 19,205 rows
_WRITE_SCREENER_TEXTS = f"""
    UPDATE market.company_profiles p SET {", ".join(
        f"{p} = coalesce(n.{S.SCREENER_LAYER[p]}, p.{p})" for p in _TEXT_LAYER)}
    FROM screened n WHERE p.symbol = n.symbol AND ({" OR ".join(
        f"coalesce(n.{S.SCREENER_LAYER[p]}, p.{p}) IS DISTINCT FROM p.{p}" for p in _TEXT_LAYER)})"""

# Symbols of a dataset resting after an empty answer: their next ask is not due yet (params: dataset, now).
_RESTING = f"""SELECT symbol FROM market.empty_answers WHERE dataset = ?
    AND asked_at + to_days(CAST(least(pow(2, attempts - 1), {S.EMPTY_BACKOFF_MAX_DAYS}) AS INTEGER)) > ?"""

# The values of a bar that a revision can change.
_BAR_VALUES = ("open", "high", "low", "close", "volume")

# The column that dates a row: a trading-day partition holds the rows of its day.
_DAY_COLUMNS = {"market.prices": "date", "market.dividends": "ex_date", "market.splits": "date"}

@dataclass(frozen=True)
class ProfileState:
    """A listed symbol and what the warehouse knows of its full profile (`profile_refresh` decides)."""

    shard: str
    symbol: str
    fetched_at: dt.datetime | None  # UTC, naive; None: never fetched
    screener_change: str | None  # set by the universe refresh, cleared by the next full profile


@dataclass(frozen=True)
class DayCoverage:
    """A session's bars against the symbols listed that session."""

    with_bar: list[str]
    absent: dict[str, str]  # symbol -> why the source has no bar (market.bars_absent)
    missing: list[str]  # neither a bar nor a reason: the day is incomplete

    @property
    def listed(self) -> list[str]:
        return sorted([*self.with_bar, *self.absent, *self.missing])


@dataclass(frozen=True)
class UniverseWrite:
    symbols: int  # universe rows written
    profiles_screened: int  # stored profiles whose screener layer was rewritten
    screener_changes: dict[str, str]  # symbol -> what changed (a full profile is due)


class WarehouseResource(Lake):
    """The warehouse, a DuckLake (`STOCK_ASSETS_DB`, `STOCK_ASSETS_DATA`, `STOCK_ASSETS_CATALOG`):
    short transactions in bulk, re-run on conflict, read from committed snapshots.
    """

    # -- writing: one method per kind of data, each ONE transaction ---------------

    def write_prices(self, bars: Iterable[Any], source: str, *, rejects: Sequence[Reject] = (),
                     run_id: str | None = None) -> int:
        """Bars (`EodBar`, `HistoricalBar`, or dicts of price fields) replace the stored
        bars of the same symbol and date. Returns the bars written."""
        return self._write([(S.PRICES, prices_table(bars, source))], rejects, run_id)

    def write_bars_absent(self, day: dt.date, reasons: dict[str, str]) -> int:
        """Symbols (-> what FMP answered) the source has no `day` bar for: the day is complete without them."""
        return self._write([(S.BARS_ABSENT, bars_absent_table(day, reasons))]) if reasons else 0

    def write_official_prices(self, bars: Iterable[Any] | Sequence[pa.Table], source: str, *,
                              rejects: Sequence[Reject] = (), run_id: str | None = None) -> tuple[int, int]:
        """FMP's official end-of-day bars (`eod-bulk` records, or `History` tables) read again over
        stored ones: they replace them; returns (bars written, stored bars whose values they corrected)."""
        bars = list(bars)
        table = history_prices_table(bars, source) if bars and isinstance(bars[0], pa.Table) else prices_table(
            bars, source)
        revised = 0

        def work(conn) -> int:
            nonlocal revised
            conn.register("official", table)
            try:
                (revised,), = conn.execute(f"""
                    SELECT count(*) FROM official o JOIN market.prices p USING (symbol, date)
                    WHERE {" OR ".join(f"o.{c} IS DISTINCT FROM p.{c}" for c in _BAR_VALUES)}""").fetchall()
            finally:
                conn.unregister("official")
            written = upsert(conn, S.PRICES.name, table)
            if rejects:
                upsert(conn, S.REJECTED_ROWS.name, rejects_table(rejects, run_id))
            return written

        written = self.transaction(work)
        return written, revised

    def write_quotes(self, quotes: Iterable[Quote], day: dt.date, *, rejects: Sequence[Reject] = (),
                     run_id: str | None = None) -> int:
        """Quotes taken after `day`'s close, stored as that session's bars."""
        return self._write([(S.PRICES, quotes_as_prices(quotes, day))], rejects, run_id)

    def write_price_history(self, symbols: Sequence[str], span: tuple[dt.date, dt.date | None],
                            histories: Sequence[pa.Table], *, rejects: Sequence[Reject] = (),
                            run_id: str | None = None, restated: Sequence[str] = ()) -> int:
        """`symbols`' full history over `span` (start, end): their bars (`History` tables), and the
        record that it is loaded, in one transaction (a reader never sees one without the other).

        The `restated` symbols' stored bars (in the units before a split) are
        replaced, not merged: deleted and written again in that same transaction.
        """
        loads = history_loads_table("prices", symbols, *span)
        prices = history_prices_table(histories, SOURCE_HISTORICAL)
        return self._write([(S.PRICES, prices), (S.HISTORY_LOADS, loads)],
                           rejects, run_id, replacing=restated)

    def write_calendar_day(self, day: dt.date, rows: Sequence[Dividend], *, rejects: Sequence[Reject] = (),
                           run_id: str | None = None) -> int:
        """One ex-date of the dividend calendar: the symbols it names get exactly its rows for that day
        (an amended amount replaces the old one, a withdrawn event goes); other symbols keep theirs."""
        symbols = sorted({d.symbol for d in rows})
        return self._write([(S.DIVIDENDS, dividends_table(list(rows), "dividends-calendar"))], rejects, run_id,
                           delete_where=("ex_date = ? AND symbol IN (SELECT unnest(?::VARCHAR[]))", [day, symbols]))

    def write_dividend_history(self, symbols: Sequence[str], end: dt.date, rows: Iterable[Dividend], *,
                               rejects: Sequence[Reject] = (), run_id: str | None = None,
                               restated: Sequence[str] = ()) -> int:
        """`symbols`' full dividend history as of `end`, and the record that it is loaded
        (the `restated` symbols' stored dividends replaced in the same transaction)."""
        loads = history_loads_table("dividends", symbols, None, end)
        return self._write([(S.DIVIDENDS, dividends_table(list(rows), "dividends")), (S.HISTORY_LOADS, loads)],
                           rejects, run_id, replacing=restated)

    def write_splits(self, splits: Iterable[Split], span: tuple[dt.date, dt.date], *,
                     rejects: Sequence[Reject] = (), run_id: str | None = None) -> int:
        """Splits, and the days of the splits calendar now loaded (`span`: first and last), together."""
        loads = calendar_loads_table("splits-calendar", *span)
        return self._write([(S.SPLITS, splits_table(splits)), (S.CALENDAR_LOADS, loads)], rejects, run_id)

    def write_profiles(self, profiles: Iterable[Profile] | pa.Table, *, fetched_at: dt.datetime | None = None,
                       rejects: Sequence[Reject] = (), run_id: str | None = None) -> int:
        """Full profiles (records fetched at `fetched_at`, default now, or a table of cached bulk rows)
        replace the stored ones, both layers."""
        table = profiles if isinstance(profiles, pa.Table) else profiles_table(
            profiles, fetched_at or clock.now())
        return self._write([(S.COMPANY_PROFILES, table)], rejects, run_id)

    def write_universe(self, rows: Sequence[ScreenerRow], shard_of: Callable[[str], str],
                       screened_at: dt.datetime | None = None, *, gone: Iterable[str] = (),
                       absent_from: dt.date | None = None, today: dt.date | None = None) -> UniverseWrite:
        """Today's universe, point in time, and the screener layer of the profiles, in one transaction.

        The symbols it lists are written. One it does not list stays listed, marked absent from
        `today` (`absent_since`), until FMP says it is `gone` (delisted, renamed) or it has been
        absent since `absent_from` or before; then it is kept (with its last listed day and all its
        data) but not listed. `absent_from=None` (a day whose answer FMP got wrong) marks no absence
        and unlists nothing but what FMP says is gone. Every stored profile of a listed symbol takes the screener's
        columns (`SCREENER_LAYER`; a field the screener leaves empty keeps the profile's), and one
        whose name, sector, industry or exchange changed on the screener since the last refresh is
        marked (`screener_change`) for a full profile.
        """
        table = symbols_table(rows, shard_of, screened_at)
        now = utc_naive(screened_at)
        today = today or now.date()

        def work(conn) -> UniverseWrite:
            conn.register("screened_raw", table)
            # A field FMP leaves empty today keeps its last known value: X -> null -> Y is a change.
            conn.execute(f"""CREATE OR REPLACE TEMP TABLE screened AS
                SELECT n.* REPLACE ({", ".join(f"coalesce(n.{c}, o.{c}) AS {c}" for c in _KEPT_WHEN_EMPTY)})
                FROM screened_raw n LEFT JOIN market.symbols o USING (symbol)""")
            try:
                changed = dict(conn.execute(_SCREENER_CHANGES).fetchall())
                if changed:
                    conn.execute(_MARK_SCREENER_CHANGES)
                written = upsert(conn, S.SYMBOLS.name, conn.sql("FROM screened").to_arrow_table())
                if absent_from is not None:
                    conn.execute(f"""UPDATE market.symbols SET absent_since = coalesce(absent_since, ?)
                                     WHERE {_LISTED} AND symbol NOT IN (SELECT symbol FROM screened)""", [today])
                conn.execute(f"""UPDATE market.symbols SET listed = FALSE
                                 WHERE {_LISTED} AND symbol NOT IN (SELECT symbol FROM screened)
                                   AND (symbol IN (SELECT unnest(?::VARCHAR[])) OR absent_since <= ?)""",
                             [list(gone), absent_from])
                (screened,), = conn.execute(_WRITE_SCREENER_NUMBERS, [now]).fetchall()  # the rows updated
                conn.execute(_WRITE_SCREENER_TEXTS)
            finally:
                conn.execute("DROP TABLE IF EXISTS screened")
                conn.unregister("screened_raw")
            return UniverseWrite(written, screened, changed)

        return self.transaction(work)

    def listed_by_exchange(self) -> dict[str, set[str]]:
        """The listed symbols of each exchange (short name): what a refresh is measured against."""
        found: dict[str, set[str]] = {}
        for symbol, exchange in self._rows(f"SELECT symbol, exchange_short_name FROM market.symbols "
                                           f"WHERE {_LISTED}", []):
            found.setdefault(exchange or "", set()).add(symbol)
        return found

    def write_symbol_changes(self, changes: Iterable[SymbolChange]) -> int:
        """Renames, kept for good: `market.symbol_lineage` follows a company across them."""
        return self._write([(S.SYMBOL_CHANGES, symbol_changes_table(changes))])

    def write_delistings(self, delistings: Iterable[Delisting]) -> int:
        """Delisting dates of the symbols the universe no longer lists; returns those recorded."""
        pairs = [(d.symbol, d.delisted_date) for d in delistings if d.delisted_date]
        if not pairs:
            return 0

        def work(conn) -> int:
            (updated,), = conn.execute("""
                UPDATE market.symbols s SET delisted_date = d.day
                FROM (SELECT unnest(?::VARCHAR[]) AS symbol, unnest(?::DATE[]) AS day) d
                WHERE s.symbol = d.symbol AND NOT coalesce(s.listed, TRUE)""",
                                       [[s for s, _ in pairs], [d for _, d in pairs]]).fetchall()
            return updated

        return self.transaction(work)

    def record_empty_answers(self, dataset: str, empty: Iterable[str], answered: Iterable[str] = ()) -> None:
        """`empty`: FMP answered nothing for them (one more attempt, asked now); `answered`: it answered
        with data (they rest no more)."""
        empty, answered = sorted(set(empty)), sorted(set(answered))
        now = utc_naive(None)

        def work(conn) -> None:
            conn.execute("DELETE FROM market.empty_answers WHERE dataset = ? AND symbol IN "
                         "(SELECT unnest(?::VARCHAR[]))", [dataset, answered])
            again = conn.execute("""
                SELECT ? AS dataset, n.symbol, coalesce(e.attempts, 0) + 1 AS attempts, ? AS asked_at
                FROM (SELECT unnest(?::VARCHAR[]) AS symbol) n
                LEFT JOIN market.empty_answers e ON e.dataset = ? AND e.symbol = n.symbol""",
                                 [dataset, now, empty, dataset]).to_arrow_table()
            upsert(conn, S.EMPTY_ANSWERS.name, again)

        if empty or answered:
            self.transaction(work)

    def resting_after_empty(self, dataset: str) -> set[str]:
        """Symbols FMP answered with nothing whose next ask is not due yet (backoff)."""
        return {s for (s,) in self._rows(_RESTING, [dataset, utc_naive(None)])}

    def write_metrics(self, step: tuple[str, str, str], tables: dict[str, pa.Table]) -> None:
        """One step's (run, asset, partition) figures replace what it recorded before."""
        def work(conn) -> None:
            for name, table in tables.items():
                upsert(conn, name, table, delete_where="run_id = ? AND asset = ? AND partition = ?",
                       params=list(step))

        self.transaction(work)

    def record_rejects(self, rejects: Sequence[Reject], run_id: str | None) -> int:
        """Store rejected rows; a re-run replaces the same rejects instead of adding them."""
        return self.write_rows(S.REJECTED_ROWS.name, rejects_table(rejects, run_id))

    def mark_history_loaded(self, dataset: str, symbols: Iterable[str], start: dt.date | None,
                            end: dt.date | None) -> int:
        """Record that `symbols`' full `dataset` history ('prices' or 'dividends') from
        `start` to `end` is loaded (the history writes do it with their data)."""
        return self.write_rows(S.HISTORY_LOADS.name, history_loads_table(dataset, symbols, start, end))

    def _write(self, parts: list[tuple[S.Table, pa.Table]], rejects: Sequence[Reject] = (),
               run_id: str | None = None, *, replacing: Sequence[str] = (),
               delete_where: tuple[str, list] | None = None) -> int:
        """Upsert each table, and the rejected rows, in one transaction; the rows of the first part.

        Before it, the first table loses the `replacing` symbols' rows, or the rows `delete_where` says.
        """
        rejected = rejects_table(rejects, run_id)
        if replacing:
            delete_where = ("symbol IN (SELECT unnest(?::VARCHAR[]))", [list(replacing)])
        where, params = delete_where or (None, None)

        def work(conn) -> int:
            written = [upsert(conn, table.name, data, delete_where=where if i == 0 else None,
                              params=params if i == 0 else None)
                       for i, (table, data) in enumerate(parts)]
            if rejected.num_rows:
                upsert(conn, S.REJECTED_ROWS.name, rejected)
            return written[0]

        return self.transaction(work)

    # -- reading -------------------------------------------------------------

    def symbols_needing_history(
        self, dataset: str, symbols: Iterable[str], start: dt.date | None = None
    ) -> list[str]:
        """`symbols` (in their order) whose `dataset` history is not loaded, or
        was loaded from a later date than `start`."""
        symbols = list(dict.fromkeys(symbols))
        if not symbols:
            return []
        rows = self.query(
            "SELECT symbol, start_date FROM market.history_loads"
            " WHERE dataset = ? AND symbol IN (SELECT unnest(?::VARCHAR[]))",
            [dataset, symbols],
        )
        done = {
            r["symbol"]
            for r in rows
            if start is None or r["start_date"] is None or r["start_date"] <= start
        } | self.resting_after_empty(dataset)
        return [s for s in symbols if s not in done]

    def shards_needing_restatement(self) -> set[str]:
        """Shards holding a symbol whose stored prices or dividends predate a split."""
        rows = self.query(f"SELECT DISTINCT u.shard FROM ({_RESTATEMENTS}) r JOIN market.symbols u USING (symbol) "
                          f"WHERE {_LISTED}")
        return {r["shard"] for r in rows}

    def first_bar_dates(self, symbols: Iterable[str]) -> dict[str, dt.date]:
        """Each symbol's first stored bar (symbols without one are left out)."""
        symbols = list(dict.fromkeys(symbols))
        if not symbols:
            return {}
        return dict(self._rows("SELECT symbol, min(date) FROM market.prices "
                               "WHERE symbol IN (SELECT unnest(?::VARCHAR[])) GROUP BY symbol", [symbols]))

    def symbols_needing_restatement(self, dataset: str, symbols: Iterable[str]) -> list[str]:
        """`symbols` (in their order) whose stored `dataset` history predates a split.

        A symbol needs restating when a split in `market.splits` has an ex-date
        after the day its history was loaded (adjusted) to, and after its first
        stored row: the rows before the split are in the old shares.
        """
        symbols = list(dict.fromkeys(symbols))
        if not symbols:
            return []
        rows = self.query(f"SELECT symbol FROM ({_RESTATEMENTS}) WHERE dataset = ? "
                          f"AND symbol IN (SELECT unnest(?::VARCHAR[]))", [dataset, symbols])
        due = {r["symbol"] for r in rows}
        return [s for s in symbols if s in due]

    def calendar_span(self, endpoint: str) -> tuple[dt.date, dt.date] | None:
        """(first, last) day of `endpoint` loaded so far, or None."""
        rows = self.query("SELECT start_date, end_date FROM market.calendar_loads WHERE endpoint = ?", [endpoint])
        return (rows[0]["start_date"], rows[0]["end_date"]) if rows else None

    def symbols_with_quote_bars(self, symbols: Iterable[str], before: dt.date | None = None) -> set[str]:
        """Of `symbols`, those holding a bar taken from a quote (provisional until FMP's end-of-day
        history confirms it), dated before `before` if given."""
        symbols = list(dict.fromkeys(symbols))
        if not symbols:
            return set()
        sql = ("SELECT DISTINCT symbol FROM market.prices WHERE source = 'batch-quote' "
               "AND symbol IN (SELECT unnest(?::VARCHAR[]))")
        params: list = [symbols]
        if before is not None:
            sql, params = sql + " AND date < ?", params + [before]
        return {s for (s,) in self._rows(sql, params)}

    def shards_with_quote_bars(self, before: dt.date) -> set[str]:
        """Shards holding a listed symbol with a quote-derived bar dated before `before` (overdue)."""
        return {s for (s,) in self._rows(f"""
            SELECT DISTINCT u.shard FROM market.prices p JOIN market.symbols u USING (symbol)
            WHERE p.source = 'batch-quote' AND p.date < ? AND {_LISTED}""", [before])}

    def universe(self, shards: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """`market.symbols` rows (all, or those of some shards), ordered by symbol."""
        if shards is None:
            return self.query(f"SELECT * FROM market.symbols WHERE {_LISTED} ORDER BY symbol")
        return self.query(f"SELECT * FROM market.symbols WHERE {_LISTED} AND {_IN_SHARDS} ORDER BY symbol",
                          [list(shards)])

    def universe_symbols(self, shards: Sequence[str] | None = None) -> set[str]:
        sql, params = f"SELECT symbol FROM market.symbols WHERE {_LISTED}", []
        if shards is not None:
            sql, params = sql + f" AND {_IN_SHARDS}", [list(shards)]
        return {r["symbol"] for r in self.query(sql, params)}

    def shard_sizes(self) -> dict[str, int]:
        """Listed symbols per shard (shards holding none are left out)."""
        return dict(self._rows(f"SELECT shard, count(*) FROM market.symbols WHERE {_LISTED} GROUP BY shard", []))

    def payer_symbols(self, shards: Sequence[str] | None = None) -> set[str]:
        """The symbols worth asking for dividends: those with dividends stored (from the calendar or
        their history), and those the screener does not say pay nothing (its lastAnnualDividend is
        above zero, or null: FMP leaves it null for some payers)."""
        sql = (f"SELECT symbol FROM market.symbols WHERE {_LISTED} AND (coalesce(last_annual_dividend, 1) > 0 "
               f"OR symbol IN (SELECT symbol FROM market.dividends))")
        params = []
        if shards is not None:
            sql, params = sql + f" AND {_IN_SHARDS}", [list(shards)]
        return {r["symbol"] for r in self.query(sql, params)}

    def shards_needing_history(self) -> set[str]:
        """Shards holding a symbol whose price history, or a payer whose dividends, are not loaded."""
        rows = self.query(
            "SELECT DISTINCT s.shard FROM market.symbols s"
            " LEFT JOIN market.history_loads p ON p.dataset = 'prices' AND p.symbol = s.symbol"
            " LEFT JOIN market.history_loads d ON d.dataset = 'dividends' AND d.symbol = s.symbol"
            f" WHERE {_LISTED} AND ((p.symbol IS NULL AND s.symbol NOT IN ({_RESTING}))"
            f" OR (d.symbol IS NULL AND (coalesce(s.last_annual_dividend, 1) > 0"
            f" OR s.symbol IN (SELECT symbol FROM market.dividends))))", ["prices", utc_naive(None)])
        return {r["shard"] for r in rows}

    # -- what the checks read ------------------------------------------------------

    def price_sanity(self, *, day: dt.date | None = None,
                     shards: Sequence[str] | None = None) -> tuple[int, int, list]:
        """(bars checked, insane bars, up to 5 examples) over one day's bars or some shards'."""
        where, params = ("date = ?", [day]) if shards is None else (
            f"symbol IN (SELECT symbol FROM market.symbols WHERE {_IN_SHARDS})", [list(shards)])
        (rows, bad), = self._rows(f"SELECT count(*), count(*) FILTER (WHERE {_INSANE_PRICE}) "
                                  f"FROM market.prices WHERE {where}", params)
        examples = self._rows(f"SELECT symbol, date FROM market.prices WHERE {where} AND {_INSANE_PRICE} "
                              f"LIMIT 5", params) if bad else []
        return rows, bad, examples

    def rows_held(self, table: str, *, day: dt.date | None = None, shards: Sequence[str] | None = None) -> int:
        """Rows `table` holds: all, one trading day's, or some shards' symbols' (the UI's row count)."""
        name = S.table(table).name
        if day is not None:
            sql, params = f"SELECT count(*) FROM {name} WHERE {_DAY_COLUMNS[name]} = ?", [day]
        elif shards is not None:
            sql, params = (f"SELECT count(*) FROM {name} WHERE symbol IN "
                           f"(SELECT symbol FROM market.symbols WHERE {_IN_SHARDS})", [list(shards)])
        else:
            sql, params = f"SELECT count(*) FROM {name}", []
        (count,), = self._rows(sql, params)
        return count

    def rows_by_day(self, table: str, first: dt.date, last: dt.date) -> dict[dt.date, int]:
        """Rows per trading day of a dated table (prices, dividends) between two days."""
        name = S.table(table).name
        column = _DAY_COLUMNS[name]
        rows = self._rows(f"SELECT {column}, count(*) FROM {name} WHERE {column} BETWEEN ? AND ? GROUP BY ALL",
                          [first, last])
        return dict(rows)

    def history_span(self, dataset: str) -> tuple[bool, dt.date | None, dt.date | None]:
        """(loaded for all, first day, last day) that every active symbol's `dataset` history covers.

        Dividend histories concern the payers only, and cover all time back
        (their first day is None).
        """
        payers = (" AND (coalesce(s.last_annual_dividend, 1) > 0 OR s.symbol IN (SELECT symbol FROM market.dividends))"
                  if dataset == "dividends" else "")
        (symbols, unloaded, first, last), = self._rows(f"""
            SELECT count(*), count(*) FILTER (WHERE h.symbol IS NULL), max(h.start_date), min(h.end_date)
            FROM market.symbols s
            LEFT JOIN market.history_loads h ON h.dataset = ? AND h.symbol = s.symbol
            WHERE coalesce(s.is_actively_trading, TRUE) AND {_LISTED}{payers}
              AND s.symbol NOT IN ({_RESTING})""", [dataset, dataset, utc_naive(None)])
        return symbols > 0 and unloaded == 0, first, last

    def split_day_moves(self, shards: Sequence[str]) -> list[tuple[str, dt.date, float, float]]:
        """(symbol, ex-date, split ratio, close before / close on the ex-date) for the shards' splits.

        The ASOF join reads only the bars of symbols that split: over all 21 million bars it took
        1.4 GB and 2 s a shard run (the first load's 2.2 GB worker), now ~0.1 GB and 0.02 s."""
        return self._rows("""
            WITH on_day AS (
                SELECT s.symbol, s.date, s.numerator / s.denominator AS ratio, p.close
                FROM market.splits s
                JOIN market.symbols u ON u.symbol = s.symbol AND list_contains(?::VARCHAR[], u.shard)
                JOIN market.prices p ON p.symbol = s.symbol AND p.date = s.date),
            before AS (SELECT symbol, date, close FROM market.prices WHERE symbol IN (SELECT symbol FROM on_day))
            SELECT d.symbol, d.date, d.ratio, b.close / d.close
            FROM on_day d ASOF JOIN before b ON b.symbol = d.symbol AND d.date > b.date
            WHERE d.close > 0""", [list(shards)])

    def duplicated_keys(self, table: str, day: dt.date | None = None) -> int:
        """Keys held more than once, in the whole table or in `day`'s rows: grouping the 24 million
        rows of market.prices took 1.4 GB and 3 s, a day's 19,205 rows take nothing."""
        key = ", ".join(S.table(table).key)
        where, params = (f"WHERE {_DAY_COLUMNS[table]} = ?", [day]) if day else ("", [])
        (dupes,), = self._rows(f"SELECT count(*) FROM (SELECT {key} FROM {S.table(table).name} {where} "
                               f"GROUP BY ALL HAVING count(*) > 1)", params)
        return dupes

    def day_coverage(self, day: dt.date) -> DayCoverage:
        """Which symbols listed on `day` have its bar, which the source has none for, which lack it.

        Listed on `day`: listed now, or listed by a refresh on or after it (a symbol that has left
        since keeps its past sessions), and not delisted before it.
        """
        rows = self._rows(f"""
            SELECT s.symbol, p.symbol IS NOT NULL, a.reason FROM market.symbols s
            LEFT JOIN market.prices p ON p.symbol = s.symbol AND p.date = ?
            LEFT JOIN market.bars_absent a ON a.symbol = s.symbol AND a.date = ?
            WHERE coalesce(s.is_actively_trading, TRUE)
              AND ({_LISTED} OR s.last_listed >= ?) AND (s.delisted_date IS NULL OR s.delisted_date > ?)
            ORDER BY s.symbol""", [day, day, day, day])
        return DayCoverage(with_bar=[s for s, has, _ in rows if has],
                           absent={s: reason for s, has, reason in rows if not has and reason},
                           missing=[s for s, has, reason in rows if not has and not reason])

    def profile_freshness(self, shards: Sequence[str], max_age_days: int) -> tuple[int, int]:
        """(the shards' symbols, those whose profile is within `max_age_days`)."""
        (total, fresh), = self._rows(f"""
            SELECT count(*), count(*) FILTER (WHERE p.fetched_at >= ?)
            FROM market.symbols s LEFT JOIN market.company_profiles p USING (symbol)
            WHERE list_contains(?::VARCHAR[], s.shard) AND {_LISTED}""",
            [utc_naive(clock.now() - dt.timedelta(days=max_age_days)), list(shards)])
        return total, fresh

    def profile_states(self) -> list[ProfileState]:
        """Every listed symbol with its shard, when its full profile was fetched and any change the
        screener showed since: what decides whose full profile is due."""
        return [ProfileState(*row) for row in self._rows(
            f"SELECT s.shard, s.symbol, p.fetched_at, p.screener_change FROM market.symbols s "
            f"LEFT JOIN market.company_profiles p USING (symbol) WHERE {_LISTED}", [])]

    def _rows(self, sql: str, params: list) -> list[tuple]:
        return [tuple(row.values()) for row in self.query(sql, params)]

    def shards_present(self) -> set[str]:
        """Shards that hold at least one symbol of the universe."""
        return {r["shard"] for r in self.query(f"SELECT DISTINCT shard FROM market.symbols WHERE {_LISTED}")}
