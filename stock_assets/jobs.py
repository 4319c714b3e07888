"""Jobs, and the plan of runs that make up one daily sync.

Dagster runs one partitions definition per run, so a sync is several runs:
the universe first, then the day's session (prices and dividends), then one
run per symbol shard (profiles always; price and dividend history only where
the shard holds symbols whose history is not loaded yet).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import dagster as dg

from stock_assets.assets import DAILY_ASSETS, HISTORY_ASSETS, SHARD_ASSETS, company_profiles, symbols
from stock_assets.assets.profiles import is_due
from stock_assets.partitions import SHARD_KEYS
from stock_assets.resources import SyncSettings

from stock_assets.warehouse import WarehouseResource

universe_job = dg.define_asset_job("universe", selection=[symbols])
session_job = dg.define_asset_job("session", selection=DAILY_ASSETS)
shards_job = dg.define_asset_job("shards", selection=SHARD_ASSETS)




@dataclass(frozen=True)
class PlannedRun:
    """Plain names, so a run can be planned in one process and executed in another."""

    assets: tuple[str, ...]
    partition_key: str | None = None

    @property
    def asset_keys(self) -> list[dg.AssetKey]:
        return [dg.AssetKey(name) for name in self.assets]

    def describe(self) -> str:
        names = ", ".join(self.assets)
        return f"{names} [{self.partition_key}]" if self.partition_key else names


def _names(assets) -> tuple[str, ...]:
    return tuple(a.key.to_user_string() for a in assets)


def plan_after_universe(warehouse: WarehouseResource, instance: dg.DagsterInstance,
                        day: dt.date, settings: SyncSettings | None = None) -> list[PlannedRun]:
    """The runs that follow a fresh universe: the session, then each shard with work to do.

    A shard runs `company_profiles` when some of its profiles are due (or it
    never ran), and the history assets when it holds symbols whose history is
    not loaded (or they never ran for it). A shard with nothing to do costs no
    run, and an empty shard has nothing to materialize.
    """
    settings = settings or SyncSettings()
    runs = [PlannedRun(_names(DAILY_ASSETS), day.isoformat())]
    present = warehouse.shards_present()
    history = warehouse.shards_needing_history() | _never_materialized(instance, HISTORY_ASSETS)
    profiles = _shards_with_due_profiles(warehouse, settings) | _never_materialized(instance, [company_profiles])
    for shard in SHARD_KEYS:
        if shard not in present:
            continue
        assets = ((company_profiles,) if shard in profiles else ()) + (
            tuple(HISTORY_ASSETS) if shard in history else ())
        if assets:
            runs.append(PlannedRun(_names(assets), shard))
    return runs


def _shards_with_due_profiles(warehouse: WarehouseResource, settings: SyncSettings) -> set[str]:
    today = dt.datetime.now(dt.timezone.utc).date()
    return {shard for shard, symbol, fetched_at in warehouse.profile_ages()
            if is_due(symbol, fetched_at, today, settings.profile_max_age_days)}


def _never_materialized(instance: dg.DagsterInstance, assets) -> set[str]:
    shards: set[str] = set()
    for asset in assets:
        done = instance.get_materialized_partitions(asset.key)
        shards |= set(SHARD_KEYS) - set(done)
    return shards
