"""`Materialization`: what one materialization of an asset has, and the steps every asset takes.

An asset body reads top to bottom:

    with Materialization(context, fmp, warehouse, settings) as m:
        todo = ...                                   # plan: what the warehouse lacks
        m.fetch_and_write(todo, fmp.profile, lambda got: warehouse.write_profiles(
            got.records, rejects=got.rejects, run_id=m.run_id))
        return m.result(checks)                      # the verdict, with its checks

It holds the Dagster context, the FMP resource, the warehouse, the settings
and the figures (`RunStats`); leaving the `with` records those figures in
`metrics.*` however the materialization ended (a failure, an interruption):
that is when they matter most.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import dagster as dg

from stock_assets import metrics
from stock_assets.checks import ITEM_SUCCESS, item_success
from stock_assets.fmp import FetchSummary, FMPResource, Parsed, redact
from stock_assets.resources import SyncSettings
from stock_assets.run_stats import RunStats
from stock_assets.warehouse import WarehouseResource

T = TypeVar("T")


@dataclass
class Fetched(Generic[T]):
    """One chunk's results, flattened for writing: the items asked, the records, the rejected rows."""

    items: list[T]
    records: list[Any] = field(default_factory=list)
    rejects: list[Any] = field(default_factory=list)


class Materialization:
    def __init__(self, context: dg.AssetExecutionContext, fmp: FMPResource, warehouse: WarehouseResource,
                 settings: SyncSettings):
        self.context, self.fmp, self.warehouse, self.settings = context, fmp, warehouse, settings
        partition = context.partition_key if context.has_partition_key else None
        self.stats = RunStats(context.asset_key.to_user_string(), partition, fmp.calls, fmp.pace_per_min)

    @property
    def run_id(self) -> str:
        return self.context.run.run_id

    @property
    def partition_key(self) -> str:
        return self.context.partition_key

    @property
    def day(self) -> dt.date:
        """The trading day of a trading-day partition."""
        return dt.date.fromisoformat(self.context.partition_key)

    def log(self, message: str) -> None:
        self.context.log.info(message)

    def warn(self, message: str) -> None:
        self.context.log.warning(message)

    # -- recording, however it ends ----------------------------------------------------

    def __enter__(self) -> Materialization:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "succeeded" if exc_type is None else "failed"
        error = None if exc is None else redact(f"{type(exc).__name__}: {exc}")[:2000]
        try:
            metrics.record(self.warehouse, self.stats, self.run_id, dict(self.context.run.tags), status, error)
        except Exception as failure:  # the figures must never fail the materialization
            self.warn(f"Could not record metrics for this run: {type(failure).__name__}: {failure}")

    # -- fetching and writing ----------------------------------------------------------------

    def fetch_and_write(self, items: Sequence[T], fetch_one: Callable[[T], Parsed[Any]],
                        write: Callable[[Fetched[T]], int],
                        weight: Callable[[T], int] = lambda item: 1) -> FetchSummary[T]:
        """Fetch items in adaptive chunks; each chunk is written (and so checkpointed) at once.

        `write(fetched)` stores one chunk's records and rejected rows in one
        warehouse transaction and returns the rows written. `weight(item)` is
        how many symbols an item stands for (a batch of quotes: its size), so
        phase throughput is always in symbols. Items that still fail after the
        client's retries are counted as failed items; the rest are counted too.
        """
        label = f"{self.stats.route} {self.partition_key}"  # e.g. "profile A1" in the progress lines
        write_s = 0.0
        started = time.monotonic()
        for chunk in self.fmp.fetch_chunks(items, fetch_one, label=label, log=self.log):
            chunk_started = time.monotonic()
            fetched = Fetched([item for item, _ in chunk.results],
                              [r for _, parsed in chunk.results for r in parsed.records],
                              [r for _, parsed in chunk.results for r in parsed.rejects])
            self.stats.rows_written += write(fetched)
            self.stats.rejects += len(fetched.rejects)
            elapsed = time.monotonic() - chunk_started
            write_s += elapsed
            self.stats.add_phase_time("write", elapsed, sum(weight(item) for item in fetched.items))
        summary = chunk.summary if items else FetchSummary(total=0)
        # The workers fetched while this thread wrote: fetch time is what was not writing.
        failed = [f.item for f in summary.failures]
        self.stats.add_phase_time("fetch", time.monotonic() - started - write_s,
                                  sum(weight(i) for i in items), failed=sum(weight(i) for i in failed))
        for failure in summary.failures[:5]:
            self.warn(f"{label}: {failure.item} failed: {failure.error}")
        return summary

    def write(self, write: Callable[[], int], items: int) -> int:
        """A route's one bulk write (`eod-bulk`, a calendar day, cached bulk profiles), timed."""
        with self.stats.phase("write") as phase:
            rows = write()
            phase.items = phase.succeeded = items
        self.stats.rows_written += rows
        return rows

    def count_items(self, total: int, failed: Sequence[str] = ()) -> None:
        self.stats.items_total += total
        self.stats.items_succeeded += total - len(failed)
        self.stats.items_failed += len(failed)
        self.stats.failed_items += list(failed)

    # -- the verdict --------------------------------------------------------------------------

    def result(self, checks: Sequence[dg.AssetCheckResult] = (), **metadata: Any) -> dg.MaterializeResult:
        """Succeed, naming failed items, unless more than the allowed share failed."""
        stats, allowed = self.stats, self.settings.max_failed_share
        attempted = stats.items_succeeded + stats.items_failed
        if attempted and stats.items_failed > allowed * attempted:
            raise dg.Failure(
                description=(
                    f"{stats.items_failed} of {attempted} items failed after retries "
                    f"(more than {allowed:.1%}). What was fetched is stored; run this partition "
                    f"again (or `stock-assets backfill-failed`) to fetch only the rest."),
                metadata=stats.metadata(),
            )
        if stats.items_failed:
            self.warn(f"{stats.items_failed} items failed and will be fetched next time: "
                      f"{', '.join(stats.failed_items[:20])}")
        return dg.MaterializeResult(
            metadata={**stats.metadata(), "dagster/row_count": stats.rows_written, **metadata},
            check_results=[*checks, *self._item_success(allowed)])

    def market_closed(self, calls_saved: int, checks: Sequence[dg.AssetCheckResult] = ()) -> dg.MaterializeResult:
        """A weekday the market was closed: zero rows, zero calls, and it says so."""
        self.stats.route = "market closed"
        self.stats.optimized("holiday skip", considered=1, skipped=1, calls_saved=calls_saved)
        self.log(f"{self.partition_key}: the market was closed (NYSE holiday); nothing to fetch.")
        return dg.MaterializeResult(metadata={**self.stats.metadata(), "market": "closed", "dagster/row_count": 0},
                                    check_results=[*checks, *self._item_success(1.0)])

    def _item_success(self, allowed: float) -> list[dg.AssetCheckResult]:
        """The item success check, for the assets that declare it."""
        names = {spec.name for spec in self.context.assets_def.check_specs}
        return [item_success(self.stats, allowed)] if ITEM_SUCCESS in names else []
