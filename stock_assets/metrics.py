"""Write a materialization's figures into the `metrics` tables.

Called for every materialization, failed ones included (that is when the
figures matter most). Recording never fails a materialization: an error here
is logged as a warning and the run's own outcome stands.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa

from stock_assets.run_stats import RunStats
from stock_assets.tags import BACKFILL_TAG, SYNC_TAG
from stock_assets.warehouse import WarehouseResource, arrow_schema



def batch_of(tags: dict[str, str]) -> tuple[str | None, str]:
    """The sync or backfill a run belongs to, from its tags."""
    if tags.get(SYNC_TAG):
        return tags[SYNC_TAG], "sync"
    if tags.get(BACKFILL_TAG):
        return tags[BACKFILL_TAG], "backfill"
    if tags.get("dagster/backfill"):
        return tags["dagster/backfill"], "backfill"
    return None, "manual"


def _utc(unix: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix, dt.timezone.utc).replace(tzinfo=None)


def _table(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=arrow_schema(name))


def metrics_tables(stats: RunStats, run_id: str, tags: dict[str, str], status: str,
                   error: str | None = None, snapshot_id: int | None = None) -> dict[str, pa.Table]:
    step = {"run_id": run_id, "asset": stats.asset, "partition": stats.partition or ""}
    batch_id, kind = batch_of(tags)
    ended = stats.started_at + stats.duration_s
    api = stats.api_stats()
    runs = [{
        **step, "batch_id": batch_id, "batch_kind": kind, "route": stats.route or None,
        "started_at": _utc(stats.started_at), "ended_at": _utc(ended), "duration_s": stats.duration_s,
        "status": status, "items_total": stats.items_total, "items_succeeded": stats.items_succeeded,
        "items_failed": stats.items_failed, "items_skipped": stats.items_skipped,
        "rows_written": stats.rows_written, "rejected_rows": stats.rejects,
        "revisions_repaired": stats.revisions_repaired,
        "api_calls": sum(s.calls for s in api.values()), "error": error, "snapshot_id": snapshot_id,
    }]
    phases = [{
        **step, "phase": p.name, "started_at": _utc(p.started_at), "duration_s": p.duration_s,
        "items": p.items, "items_succeeded": p.succeeded, "items_failed": p.failed,
        "items_per_s": p.throughput,
    } for p in stats.phases]
    calls = [{
        **step, "endpoint": s.endpoint, "calls": s.calls, "succeeded": s.succeeded, "failed": s.failed,
        "retries": s.retries, "rate_limited": s.rate_limited, "bytes": s.bytes,
        "latency_mean_s": s.latency_mean, "latency_p50_s": s.latency(0.5),
        "latency_p95_s": s.latency(0.95), "limiter_wait_s": s.limiter_wait_s,
    } for s in api.values()]
    # A skip saves calls only if the work it belongs to was done: a failed step credits nothing
    # (its partition runs again, and what it skipped may be asked then).
    optimizations = [{
        **step, "name": o.name, "items_considered": o.considered, "items_skipped": o.skipped,
        "calls_saved": o.calls_saved, "seconds_saved": o.seconds_saved,
    } for o in stats.optimizations] if status == "succeeded" else []
    return {
        "metrics.runs": _table("metrics.runs", runs),
        "metrics.phases": _table("metrics.phases", phases),
        "metrics.api_calls": _table("metrics.api_calls", calls),
        "metrics.optimizations": _table("metrics.optimizations", optimizations),
    }


def record(warehouse: WarehouseResource, stats: RunStats, run_id: str, tags: dict[str, str],
           status: str, error: str | None = None) -> None:
    """One short transaction; re-recording the same step replaces its rows. The warehouse's snapshot
    then (after the step's writes) is recorded with them: a sync can be queried as it left the lake."""
    warehouse.write_metrics((run_id, stats.asset, stats.partition or ""),
                            metrics_tables(stats, run_id, tags, status, error, warehouse.snapshot()))
