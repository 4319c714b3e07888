"""`Materialization`: what one materialization of an asset has, and the steps every asset takes.

An asset body reads top to bottom:

    with Materialization(context, fmp, warehouse, settings) as m:
        todo = ...                                   # plan: what the warehouse lacks
        m.fetch_and_write(todo, fmp.profile, lambda got: warehouse.write_profiles(
            got.records, rejects=got.rejects, run_id=m.run_id))
        return m.result(checks)                      # the verdict, with its checks

It holds the Dagster context, the FMP resource, the warehouse, the settings
and the figures (`RunStats`); leaving the `with` records those figures in
`metrics.*` however the materialization ended (a failure, an interruption, a
cancelled run): that is when they matter most. A failure also leaves its
reason where the asset's partition view shows it: the checks' results and an
observation naming the failed items, FMP's answer and what to do next.
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import dagster as dg

from stock_assets import metrics
from stock_assets.defs.checks import BLOCKING, ITEM_SUCCESS, item_success
from stock_assets.fmp import FetchSummary, FMPResource, Parsed, redact
from stock_assets.defs.partitions import partition_label
from stock_assets.defs.resources import SyncSettings
from stock_assets.run_stats import ASSET_TABLES, RESTATED_AFTER_SPLIT, RunStats
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
        self.partitions: list[str] = list(context.partition_keys) if context.assets_def.partitions_def else []
        self.stats = RunStats(context.asset_key.to_user_string(), partition_label(self.partitions), fmp.calls,
                              fmp.pace_per_min)
        self.failure_examples: list[str] = []  # "SYMBOL: what FMP answered", the first few
        self.invalid: set[str] = set()  # items FMP answered with rows that failed validation

    @property
    def run_id(self) -> str:
        return self.context.run.run_id

    @property
    def shards(self) -> list[str]:
        """The symbol shards of a shard run: one, or the range a run of several covers."""
        return self.partitions

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
        status = "succeeded" if exc is None else "failed"
        error = None if exc is None else describe_error(exc)
        if exc is not None and not _is_interruption(exc):
            self._report_failure(error)
        with _signals_held():  # a cancel landing now must not cut the figures short
            try:
                metrics.record(self.warehouse, self.stats, self.run_id, dict(self.context.run.tags), status, error)
            except Exception as failure:  # the figures must never fail the materialization
                self.warn(f"Could not record metrics for this run: {type(failure).__name__}: {failure}")

    def _report_failure(self, error: str) -> None:
        """Why this partition failed, where the asset's partition view shows it."""
        stats, advice = self.stats, next_action(error)
        metadata = {"error": error, "next_action": advice,
                    "items_failed": stats.items_failed,
                    "items_attempted": stats.items_succeeded + stats.items_failed}
        if stats.failed_items:
            metadata["failed_symbols"] = ", ".join(stats.failed_items[:50])
        if self.failure_examples:
            metadata["fmp_answers"] = " | ".join(self.failure_examples)
        for partition in self.partitions or [None]:
            self.context.log_event(dg.AssetObservation(asset_key=self.context.asset_key, partition=partition,
                                                       description=f"Failed: {error} {advice}", metadata=metadata))

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
        label = f"{self.stats.route} {self.stats.partition}"  # e.g. "profile A1" in the progress lines
        write_s = 0.0
        started = time.monotonic()
        chunks = self.fmp.fetch_chunks(items, fetch_one, label=label, log=self.log)
        # Closed however this ends (a failed write, an interruption): its fetchers stop at once.
        with closing(chunks):
            for chunk in chunks:
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
            self.failure_examples.append(redact(f"{failure.item}: {failure.error}")[:300])
        return summary

    def restating(self, symbols: Sequence[str]) -> None:
        """Symbols whose stored history predates a split, fetched again in full: their own line in metrics."""
        if symbols:
            self.stats.optimized(RESTATED_AFTER_SPLIT, considered=len(symbols), skipped=0, calls_saved=0)
            self.stats.notes.append(f"{len(symbols)} restated after a split: {', '.join(symbols[:10])}")
            self.log(f"Restating after a split: {', '.join(symbols)}")

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
        """Succeed, naming failed items, unless more than the allowed share failed.

        Failing, the checks are logged first, so `item_success_rate` shows as
        failed with its figures in the check's history, not as "execution failed".
        """
        stats, allowed = self.stats, self.settings.max_failed_share
        check_results = [*checks, *self._item_success(allowed)]
        attempted = stats.items_succeeded + stats.items_failed
        incomplete = [c for c in check_results if c.check_name in BLOCKING and not c.passed]
        if incomplete or (attempted and stats.items_failed > allowed * attempted):
            for check in check_results:
                for partition in self.partitions or [None]:
                    self.context.log_event(self._evaluation(check, partition))
            why = [f"{stats.items_failed} of {attempted} items failed after retries"
                   + (f" (more than {allowed:.1%})" if allowed else "")] if stats.items_failed else []
            why += [c.description or f"check {c.check_name} failed" for c in incomplete]
            raise dg.Failure(description=f"{'; '.join(why)}. What was fetched is stored. {RERUN}",
                             metadata=stats.metadata())
        if stats.items_failed:
            self.warn(f"{stats.items_failed} items failed and will be fetched next time: "
                      f"{', '.join(stats.failed_items[:20])}")
        return dg.MaterializeResult(metadata={**self._figures(), **metadata}, check_results=check_results)

    def market_closed(self, calls_saved: int, checks: Sequence[dg.AssetCheckResult] = ()) -> dg.MaterializeResult:
        """A weekday the market was closed: zero rows, zero calls, and it says so."""
        self.stats.route = "market closed"
        self.stats.optimized("holiday skip", considered=1, skipped=1, calls_saved=calls_saved)
        self.log(f"{self.stats.partition}: the market was closed (NYSE holiday); nothing to fetch.")
        return dg.MaterializeResult(metadata={**self._figures(), "market": "closed"},
                                    check_results=[*checks, *self._item_success(1.0)])

    def _figures(self) -> dict[str, Any]:
        """The run's figures, the rows held and the warehouse's snapshot after this materialization's
        writes (`stock-assets sql --as-of` reads it). The rows held are `dagster/row_count` (the UI's
        row count) for one partition or the asset; a run of a range of shards records the same
        metadata on each of them, so there they are the range's rows, named as such."""
        held = self._rows_held()
        rows = {"dagster/row_count": held} if len(self.partitions) <= 1 else {
            "partitions": self.stats.partition, "rows_held_by_the_partitions": held}
        return {**self.stats.metadata(), **rows, "lake_snapshot": self.warehouse.snapshot()}

    def _rows_held(self) -> int:
        table = ASSET_TABLES[self.stats.asset]
        if not self.partitions:
            return self.warehouse.rows_held(table)
        if isinstance(self.context.assets_def.partitions_def, dg.TimeWindowPartitionsDefinition):
            return self.warehouse.rows_held(table, day=self.day)
        return self.warehouse.rows_held(table, shards=self.shards)

    def _item_success(self, allowed: float) -> list[dg.AssetCheckResult]:
        """The item success check, for the assets that declare it."""
        names = {spec.name for spec in self.context.assets_def.check_specs}
        return [item_success(self.stats, allowed)] if ITEM_SUCCESS in names else []

    def _evaluation(self, check: dg.AssetCheckResult, partition: str | None) -> dg.AssetCheckEvaluation:
        """A check's result as an event of its own: for a materialization that will not complete."""
        return dg.AssetCheckEvaluation(
            asset_key=self.context.asset_key, check_name=check.check_name, passed=check.passed,
            metadata=check.metadata, severity=check.severity, description=check.description, partition=partition)


def describe_error(error: BaseException) -> str:
    """One line for metrics and the partition view: the error without the key, or 'interrupted'."""
    if _is_interruption(error):
        return "interrupted: the run was cancelled or stopped"
    text = str(error.description) if isinstance(error, dg.Failure) and error.description else str(error)
    return redact(f"{type(error).__name__}: {text}")[:2000]


def next_action(error: str) -> str:
    """What to do about a failure: its own advice when it names a setting, else run it again."""
    if any(name in error for name in ("FMP_API_KEY", "FMP_PLAN", "FMP_BASE_URL")):
        return "Fix the setting the error names, then materialize the failed partitions again."
    return RERUN


RERUN = ("Materialize the failed partitions again (Materialize… → Failed in the asset's Partitions "
         "view, or `stock-assets backfill-failed`): only what is not stored yet is fetched.")


def _is_interruption(error: BaseException) -> bool:
    return isinstance(error, (KeyboardInterrupt, dg.DagsterExecutionInterruptedError))


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT/SIGTERM wait until the block is done, then take their course.

    Cancelling a run interrupts its step; the signal that follows must not cut
    the recording of the figures short (DuckDB would answer "Query interrupted").
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in saved:
        signal.signal(signum, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        if received:
            signal.raise_signal(received[0])
