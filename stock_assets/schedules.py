"""The daily sync in the UI/daemon world: a schedule and the sensor that follows it.

The schedule refreshes the universe on weekdays after the close (New York
time); when that run succeeds, the sensor requests the session's run and one
run per shard, as `jobs.plan_after_universe` lays out. `stock-assets sync`
runs the same plan headless.
"""


import dagster as dg

from stock_assets.partitions import latest_session_day
from stock_assets.jobs import session_job, shards_job, universe_job
from stock_assets.plan import plan_after_universe
from stock_assets.resources import SyncSettings
from stock_assets.tags import SYNC_TAG
from stock_assets.warehouse import WarehouseResource


@dg.schedule(job=universe_job, cron_schedule="30 17 * * 1-5", execution_timezone="America/New_York",
             description="Weekdays at 17:30 New York time: refresh the universe, which starts the daily sync.")
def daily_sync_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    sync_id = f"scheduled-{context.scheduled_execution_time:%Y-%m-%d}"
    return dg.RunRequest(run_key=sync_id, tags={SYNC_TAG: sync_id})


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[universe_job],
                      request_jobs=[session_job, shards_job],
                      description="After the universe is refreshed: the session's run and one run per shard.")
def sync_after_universe(context: dg.RunStatusSensorContext, warehouse: WarehouseResource,
                        settings: SyncSettings):
    sync_id = context.dagster_run.tags.get(SYNC_TAG)
    if not sync_id:
        return dg.SkipReason("The universe run was not part of a daily sync.")
    day = latest_session_day()  # its partition exists (windows open at 17:00 ET)
    for planned in plan_after_universe(warehouse, context.instance, day, settings):
        job = session_job if planned.partition_key == day.isoformat() else shards_job
        yield dg.RunRequest(
            run_key=f"{sync_id}:{planned.partition_key}",
            job_name=job.name,
            partition_key=planned.partition_key,
            asset_selection=planned.asset_keys,
            tags={SYNC_TAG: sync_id},
        )
