"""Housekeeping in the daemon: what the headless commands do before and after their runs.

Under `dagster dev` (or a deployed daemon) nothing else would:
- mark FAILED the runs whose process was killed (a `stock-assets sync`
  killed while the UI runs, say), so their partitions show FAILED and the
  UI's "Materialize… → Failed" backfills them, and the run queue does not
  count them against the `fmp` pool forever;
- free the concurrency slots of runs that are no longer in progress;
- report the partitions the warehouse holds without a run of theirs
  (`held_partitions`), as `stock-assets sync` does when it ends.
"""

from __future__ import annotations

import dagster as dg

from stock_assets.held_partitions import held_partitions
from stock_assets.runs.instance_health import IN_PROGRESS, free_stale_slots, reap_dead_runs
from stock_assets.warehouse import WarehouseResource


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every 30 s: marks failed the runs whose process is gone (freeing their pool "
                       "slots), and reports the partitions the warehouse holds without a run.")
def housekeeping(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult:
    done = []
    reaped = reap_dead_runs(context.instance)
    if reaped:
        done.append(f"marked {len(reaped)} run(s) of killed processes failed")
    freed = free_stale_slots(context.instance)
    if freed:
        done.append(f"freed the pool slots of {len(freed)} finished run(s)")
    held = _held(context, warehouse)
    if held:
        done.append(f"reported {len(held)} partition(s) the warehouse already holds as materialized")
    return dg.SensorResult(asset_events=held, skip_reason="; ".join(done) or "nothing to do")


def _held(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> list[dg.AssetMaterialization]:
    if not warehouse.exists() or context.instance.get_runs(
            dg.RunsFilter(statuses=IN_PROGRESS), limit=1):
        return []  # the runs in flight may be the ones that hold them
    trading_days = context.repository_def.asset_graph.get(dg.AssetKey("daily_prices")).partitions_def
    return held_partitions(context.instance, warehouse, trading_days)
