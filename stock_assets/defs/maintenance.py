"""The warehouse's upkeep: a job in the UI, scheduled nightly, with its figures in `metrics.upkeep`.

Every commit of a sync writes Parquet files (a day's bars, a shard's histories, a chunk's
profiles) and a snapshot; replacing rows writes delete files. Left alone, a month of daily
syncs leaves hundreds of small files that every query opens, and snapshots kept forever.
`warehouse_upkeep` runs DuckLake's own maintenance (`Lake.upkeep`): merge and rewrite, expire
snapshots older than the retention (time travel reaches back that far: 30 days unless
`retention_days` says otherwise), delete the files nothing references.
"""

import dataclasses
import datetime as dt

import dagster as dg
import pyarrow as pa

from stock_assets.warehouse import WarehouseResource, arrow_schema

DEFAULT_RETENTION_DAYS = 30


class UpkeepConfig(dg.Config):
    retention_days: int = DEFAULT_RETENTION_DAYS  # snapshots older than this expire: time travel's reach


@dg.op(description="Merge the warehouse's small files, expire snapshots older than the retention, delete "
                   "files no snapshot needs; figures in metrics.upkeep.")
def upkeep_warehouse(context: dg.OpExecutionContext, config: UpkeepConfig,
                     warehouse: WarehouseResource) -> dg.Output[None]:
    started_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    done = warehouse.upkeep(dt.timedelta(days=config.retention_days))
    figures = {"retention_days": config.retention_days, "snapshots_expired": done.snapshots_expired,
               "files_deleted": done.files_deleted, "duration_s": done.seconds,
               **{f"{name}_before": value for name, value in dataclasses.asdict(done.before).items()},
               **{f"{name}_after": value for name, value in dataclasses.asdict(done.after).items()}}
    row = {"run_id": context.run_id, "started_at": started_at, **figures}
    warehouse.write_rows("metrics.upkeep", pa.Table.from_pylist([row], schema=arrow_schema("metrics.upkeep")))
    context.log.info(f"Warehouse upkeep: {done.before.data_files} -> {done.after.data_files} data files, "
                     f"{done.before.delete_files} -> {done.after.delete_files} delete files, "
                     f"{done.snapshots_expired} snapshots expired, {done.files_deleted} files deleted "
                     f"in {done.seconds:.1f}s.")
    return dg.Output(None, metadata=figures)


@dg.job(description="The warehouse's upkeep (DuckLake maintenance); nightly, or launch it by hand.",
        tags={"stock_assets/kind": "upkeep"})
def warehouse_upkeep() -> None:
    upkeep_warehouse()


# Nightly, well after the daily sync (17:30 New York) and before the next session.
nightly_upkeep = dg.ScheduleDefinition(job=warehouse_upkeep, cron_schedule="30 3 * * *",
                                       execution_timezone="America/New_York",
                                       default_status=dg.DefaultScheduleStatus.RUNNING)
