"""The code location: `dagster dev` and `dg` load `defs` from here."""

import dagster as dg

from stock_assets.assets import ALL_ASSETS
from stock_assets.housekeeping import housekeeping
from stock_assets.jobs import session_job, shards_job, universe_job
from stock_assets.resources import all_resources
from stock_assets.schedules import daily_sync_schedule, sync_after_universe

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=[universe_job, session_job, shards_job],
    schedules=[daily_sync_schedule],
    sensors=[sync_after_universe, housekeeping],
    resources=all_resources(),
)
