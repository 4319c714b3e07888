"""The daily sync in the UI/daemon world: a schedule and the sensor that follows it.

The schedule refreshes the universe on weekdays after the close (New York
time); when that run succeeds, the sensor requests at once the day's `splits`
run, the session's run and the shards with work in a few runs of shard
ranges, as `plan.plan_after_universe` lays out. A shard's history run restates the
symbols that split as it begins, so a split the splits run stores before it
is restated there; when the splits run succeeds, the sensor requests a
restatement run for the shards still holding history that predates a split
(those whose run began first). Each hop costs a sensor tick (5 s), so the
shards do not wait for the splits: measured under `dagster dev`, that hop
was a quarter of a 300-symbol first sync's wall (bench/bench_daemon.py).
`stock-assets sync` runs the same plan headless.

Both are on from the first `dagster dev` (a daily-sync platform whose daily
sync waits for a switch surprises its users): the UI route to a full sync
by hand is to materialize `symbols` alone (from the catalog, or by launching
the `universe` job); the sensor follows any successful run of the universe
alone, so the rest follows as it does after the schedule. Headless
`stock-assets sync` runs belong to no code location, so the sensor never
doubles them.
"""


import dagster as dg

from stock_assets.defs.assets import HISTORY_ASSETS
from stock_assets.fmp import FMPResource
from stock_assets.defs.partitions import latest_session_day
from stock_assets.defs.jobs import session_job, shards_job, splits_job, universe_job
from stock_assets.runs.plan import PlannedRun, plan_after_universe, session_run, shard_runs, shards_of_run
from stock_assets.defs.resources import SyncSettings
from stock_assets.tags import SYNC_TAG
from stock_assets.warehouse import WarehouseResource

UNIVERSE = dg.AssetKey("symbols")


@dg.schedule(job=universe_job, cron_schedule="30 17 * * 1-5", execution_timezone="America/New_York",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Weekdays at 17:30 New York time: refresh the universe, which starts the daily sync.")
def daily_sync_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    sync_id = f"scheduled-{context.scheduled_execution_time:%Y-%m-%d}"
    return dg.RunRequest(run_key=sync_id, tags={SYNC_TAG: sync_id})


# The sensor daemon looks at its sensors every 5 s at best. An interval of 5 s as well skipped every
# other look (a look a moment early finds the interval not yet over): 10 s from a universe run's end
# to the sync's next runs, measured under `dagster dev`. With 1 s every look evaluates the sensor.
@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, request_jobs=[splits_job, session_job, shards_job],
                      default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=1,
                      description="After a run that refreshed the universe alone (the schedule's, or `symbols` "
                                  "materialized by hand): the day's splits, the session's run and the shards "
                                  "with work in a few runs of shard ranges; after the splits, runs of the "
                                  "shards left with history to restate.")
def sync_after_universe(context: dg.RunStatusSensorContext, warehouse: WarehouseResource,
                        settings: SyncSettings, fmp: FMPResource):
    run = context.dagster_run
    day = latest_session_day()  # its partition exists (windows open at 17:00 ET)
    if set(run.asset_selection or ()) == {UNIVERSE} or run.job_name == universe_job.name:
        sync_id = run.tags.get(SYNC_TAG) or f"ui-{run.run_id[:8]}"
        tags = {SYNC_TAG: sync_id}
        yield dg.RunRequest(run_key=f"{sync_id}:splits", job_name=splits_job.name, partition_key=day.isoformat(),
                            tags=tags)
        for planned in plan_after_universe(warehouse, context.instance, day, settings, fmp.plan):
            if planned.assets == session_run(day).assets:  # the day's session, or one of a gap before it
                yield dg.RunRequest(run_key=f"{sync_id}:{planned.partition_key}", job_name=session_job.name,
                                    partition_key=planned.partition_key, tags=tags)
            else:
                yield shards_request(f"{sync_id}:{planned.describe()}", planned, tags)
        return
    if run.job_name != splits_job.name or not run.tags.get(SYNC_TAG):
        yield dg.SkipReason(f"Run {run.run_id[:8]} did not refresh the universe alone, nor a sync's splits.")
        return
    # The splits are stored: a shard whose run began before them restates its split symbols now
    # (one whose run has not begun yet will restate them itself).
    sync_id = run.tags[SYNC_TAG]
    waiting = {shard for r in context.instance.get_runs(dg.RunsFilter(
        tags={SYNC_TAG: sync_id}, statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
                                             dg.DagsterRunStatus.STARTING])) for shard in shards_of_run(r.tags)}
    restate = warehouse.shards_needing_restatement() - waiting
    if not restate:
        yield dg.SkipReason(f"No stored history predates a split after the splits run {run.run_id[:8]}.")
        return
    for planned in shard_runs({shard: tuple(HISTORY_ASSETS) for shard in restate}, warehouse.shard_sizes(),
                              context.instance):
        yield shards_request(f"{sync_id}:{planned.partition_label}:restated", planned, {SYNC_TAG: sync_id})


def shards_request(run_key: str, planned: PlannedRun, tags: dict[str, str]) -> dg.RunRequest:
    """A run of the shards job: one shard, or a range of them (Dagster's range tags name it)."""
    return dg.RunRequest(run_key=run_key, job_name=shards_job.name, partition_key=planned.single_partition,
                         asset_selection=planned.asset_keys, tags={**tags, **planned.range_tags})
