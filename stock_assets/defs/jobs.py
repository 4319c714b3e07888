"""The jobs of a daily sync: the universe, the session, the shards.

What runs a sync needs is planned in `plan`; the schedule and the sensor that
launch these jobs are in `schedules`.
"""

import dagster as dg

from stock_assets.defs.assets import DAILY_ASSETS, SHARD_ASSETS, SPLITS, symbols

universe_job = dg.define_asset_job("universe", selection=[symbols])
splits_job = dg.define_asset_job("corporate_actions", selection=[SPLITS])
session_job = dg.define_asset_job("session", selection=DAILY_ASSETS)
shards_job = dg.define_asset_job("shards", selection=SHARD_ASSETS)
