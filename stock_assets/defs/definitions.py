"""The code location: `dagster dev` and `dg` load `defs` from here.

`defs` is a `@dg.definitions` function: the configuration is read when
Dagster loads the code location, not when this module is imported. The key
reaches the FMP resource as `EnvVar("FMP_API_KEY")`, resolved by Dagster in
each step process, so the UI and run config show the variable's name, never
its value.
"""

import dagster as dg

from stock_assets.defs.assets import assets_for
from stock_assets.config import Config
from stock_assets.defs.housekeeping import housekeeping
from stock_assets.defs.maintenance import nightly_upkeep, warehouse_upkeep
from stock_assets.defs.jobs import session_job, shards_job, splits_job, universe_job
from stock_assets.defs.resources import all_resources
from stock_assets.defs.schedules import daily_sync_schedule, sync_after_universe


@dg.definitions
def defs() -> dg.Definitions:
    config = Config.from_env()
    return dg.Definitions(
        assets=assets_for(config),
        jobs=[universe_job, splits_job, session_job, shards_job, warehouse_upkeep],
        schedules=[daily_sync_schedule, nightly_upkeep],
        sensors=[sync_after_universe, housekeeping],
        resources=all_resources(config),
        # Each run's steps in the run's own process, as `stock-assets sync` runs
        # them: the default executor started a Python process per step, which
        # loads the code again (seconds of CPU on every shard run) while the
        # key's pace waited.
        executor=dg.in_process_executor,
    )
