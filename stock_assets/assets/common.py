"""What every FMP-fetching asset shares: config, chunked fetch-and-write, verdict."""


import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import dagster as dg

from stock_assets import metrics
from stock_assets.checks import item_success
from stock_assets.fmp import FMPResource
from stock_assets.fmp.chunking import Chunk, FetchSummary
from stock_assets.fmp.records import Parsed
from stock_assets.fmp.redaction import redact
from stock_assets.resources import SyncSettings
from stock_assets.run_stats import RunStats
from stock_assets.warehouse import WarehouseResource

T = TypeVar("T")

# Every asset that calls FMP is in one pool: the instance caps how many run at
# once, on top of the shared limiter that caps the calls they make.
FMP_POOL = "fmp"


class FetchConfig(dg.Config):
    refresh: bool = False  # fetch again what the warehouse already holds fresh


@contextmanager
def observe(context: dg.AssetExecutionContext, fmp: FMPResource,
            warehouse: WarehouseResource) -> Iterator[RunStats]:
    """The materialization's figures, recorded in the metrics tables however it ends."""
    partition = context.partition_key if context.has_partition_key else None
    stats = RunStats(context.asset_key.to_user_string(), partition, fmp.calls, fmp.pace_per_min)
    status, error = "failed", None
    try:
        yield stats
        status = "succeeded"
    except BaseException as exc:
        error = redact(f"{type(exc).__name__}: {exc}")[:2000]
        raise
    finally:
        try:
            metrics.record(warehouse, stats, context.run.run_id, dict(context.run.tags), status, error)
        except Exception as exc:  # the figures must never fail the materialization
            context.log.warning(f"Could not record metrics for this run: {type(exc).__name__}: {exc}")


def fetch_and_write(
    context: dg.AssetExecutionContext,
    fmp: FMPResource,
    warehouse: WarehouseResource,
    stats: RunStats,
    items: Sequence[T],
    fetch_one: Callable[[T], Parsed[Any]],
    write_chunk: Callable[[Any, list[tuple[T, Parsed[Any]]]], int],
    label: str,
    weight: Callable[[T], int] = lambda item: 1,
) -> FetchSummary[T]:
    """Fetch items in adaptive chunks; each chunk is written (and so checkpointed) at once.

    `write_chunk(conn, results)` writes one chunk's records inside one short
    transaction and returns the rows written. Rejected rows are kept too.
    `weight(item)` is how many symbols an item stands for (a batch of quotes:
    its size), so phase throughput is always in symbols.
    """
    write_s = 0.0

    def on_chunk(chunk: Chunk[T, Parsed[Any]]) -> None:
        nonlocal write_s
        started = time.monotonic()
        rejects = [r for _, parsed in chunk.results for r in parsed.rejects]
        with warehouse.write() as conn:
            stats.rows_written += write_chunk(conn, chunk.results)
            if rejects:
                warehouse.record_rejects(rejects, context.run.run_id, conn=conn)
        stats.rejects += len(rejects)
        elapsed = time.monotonic() - started
        write_s += elapsed
        stats.add_phase_time("write", elapsed, sum(weight(item) for item, _ in chunk.results))

    started = time.monotonic()
    summary = fmp.fetch_many(items, fetch_one, on_chunk, label=label, log=context.log.info)
    # The workers fetched while this thread wrote: fetch time is what was not writing.
    stats.add_phase_time("fetch", time.monotonic() - started - write_s, sum(weight(i) for i in items),
                         failed=sum(weight(f.item) for f in summary.failures))
    for failure in summary.failures[:5]:
        context.log.warning(f"{label}: {failure.item} failed: {failure.error}")
    return summary


def count_items(stats: RunStats, total: int, failed: Sequence[str]) -> None:
    stats.items_total += total
    stats.items_succeeded += total - len(failed)
    stats.items_failed += len(failed)
    stats.failed_items += list(failed)


def verdict(context: dg.AssetExecutionContext, stats: RunStats, settings: SyncSettings,
            checks: Sequence[dg.AssetCheckResult] = ()) -> dg.MaterializeResult:
    """Succeed, naming failed items, unless more than the allowed share failed."""
    attempted = stats.items_succeeded + stats.items_failed
    if attempted and stats.items_failed > settings.max_failed_share * attempted:
        raise dg.Failure(
            description=(
                f"{stats.items_failed} of {attempted} items failed after retries "
                f"(more than {settings.max_failed_share:.1%}). What was fetched is stored; "
                f"run this partition again (or `stock-assets backfill-failed`) to fetch only the rest."),
            metadata=stats.metadata(),
        )
    if stats.items_failed:
        context.log.warning(f"{stats.items_failed} items failed and will be fetched next time: "
                            f"{', '.join(stats.failed_items[:20])}")
    return dg.MaterializeResult(
        metadata={**stats.metadata(), "dagster/row_count": stats.rows_written},
        check_results=[*checks, item_success(stats, settings.max_failed_share)])
