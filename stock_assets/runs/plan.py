"""Planning: which runs a daily sync, or a backfill of what failed, needs.

Dagster runs one partitions definition per run, so a sync is several runs:
the universe first, then the day's session (prices and dividends), then the
symbol shards that have work (profiles due, history not loaded), a few runs
each holding a range of consecutive shards (Dagster runs a range of
partitions in one run, as its backfill policies do): however many shards a
day touches, its runs stay few (`shard_runs`: as many as run at once). A backfill runs what is FAILED
or missing the same way. The plans are plain names (`PlannedRun`), so a run
can be planned in one process and executed in another; `runner` executes
them, the sensor requests them.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg
from dagster import AssetPartitionStatus, DagsterRunStatus

from stock_assets import revisions, trading
from stock_assets.defs.assets import ASSET_NAMES, DAILY_ASSETS, HISTORY_ASSETS, assets_for
from stock_assets.defs.assets.common import FMP_POOL
from stock_assets.config import Config
from stock_assets.errors import ConfigError
from stock_assets.fmp import get_plan
from stock_assets.runs.instance_health import RUNS_AT_ONCE, pool_limit
from stock_assets.defs.partitions import SHARD_KEYS, latest_session_day, partition_label, shard_range
from stock_assets.profile_refresh import due_now
from stock_assets.defs.resources import SyncSettings, warehouse_resource
from stock_assets.warehouse import WarehouseResource


# Dagster's tags for a run's partition, or for its range of them (as its backfills launch them).
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@dataclass(frozen=True)
class PlannedRun:
    """Plain names, so a run can be planned in one process and executed in another.

    With `last_partition`, the run covers the partitions from `partition_key` to it (a range of
    consecutive shards)."""

    assets: tuple[str, ...]
    partition_key: str | None = None
    last_partition: str | None = None

    @property
    def asset_keys(self) -> list[dg.AssetKey]:
        return [dg.AssetKey(name) for name in self.assets]

    @property
    def single_partition(self) -> str | None:
        """The run's one partition key; None for a range (its tags name it) or no partition."""
        return None if self.last_partition else self.partition_key

    @property
    def range_tags(self) -> dict[str, str]:
        if not self.last_partition:
            return {}
        return {RANGE_START_TAG: self.partition_key, RANGE_END_TAG: self.last_partition}

    @property
    def shards(self) -> list[str]:
        """The shards the run covers (none for a run of a trading day or of the universe)."""
        if self.partition_key not in SHARD_KEYS:
            return []
        return shard_range(self.partition_key, self.last_partition or self.partition_key)

    @property
    def partition_label(self) -> str | None:
        return partition_label([k for k in (self.partition_key, self.last_partition) if k])

    def describe(self) -> str:
        names = ", ".join(self.assets)
        return f"{names} [{self.partition_label}]" if self.partition_key else names


PROFILES = dg.AssetKey("company_profiles")
DAILY_PRICES = dg.AssetKey("daily_prices")


def _names(keys: Iterable[dg.AssetKey]) -> tuple[str, ...]:
    return tuple(key.to_user_string() for key in keys)


# -- a daily sync, after its universe run ----------------------------------------------

def session_run(day: dt.date) -> PlannedRun:
    """The session's run: its bars and dividends for every symbol."""
    return PlannedRun(_names(DAILY_ASSETS), day.isoformat())


def sessions_to_sync(instance: dg.DagsterInstance, day: dt.date) -> list[dt.date]:
    """The closed sessions a sync of `day` stores, oldest first: every session after the newest one
    stored before it (a missed Friday, a week away), and `day` itself. The first sync stores `day`
    alone: the history load holds the days before it."""
    done = instance.get_materialized_partitions(DAILY_PRICES)
    before = [k for k in done if k < day.isoformat()]
    if not before:
        return [day]
    since = dt.date.fromisoformat(max(before)) + dt.timedelta(days=1)
    gap = [d for d in trading.sessions_between(since, day - dt.timedelta(days=1)) if d.isoformat() not in done]
    return gap + [day]


def plan_after_universe(warehouse: WarehouseResource, instance: dg.DagsterInstance,
                        day: dt.date, settings: SyncSettings, plan: str) -> list[PlannedRun]:
    """The runs that follow a fresh universe: the sessions to store, then the shards with work to do
    (`shard_runs`: a few runs, each a range of shards).

    A shard runs `company_profiles` when some of its full profiles are due
    (`profile_refresh`: new, changed on the screener, or on today's turn) or it
    never ran, and the history assets when it holds symbols whose history is
    not loaded, or predates a split (or they never ran for it). The day's
    `splits` run comes before this plan. No shard with work lies outside a
    run; one without work that lies inside a range costs its planning queries
    and no call (every shard asset fetches only what is missing or due).
    """
    runs = [session_run(d) for d in sessions_to_sync(instance, day)]
    present = warehouse.shards_present()
    on_turn = not get_plan(plan).serves("eod-bulk")
    history = (warehouse.shards_needing_history() | warehouse.shards_needing_restatement()
               | revisions.shards_to_confirm(warehouse, trading.last_closed_session(), settings.profile_max_age_days,
                                             on_turn)
               | _never_materialized(instance, HISTORY_ASSETS))
    profiles = _shards_with_due_profiles(warehouse, settings) | _never_materialized(instance, [PROFILES])
    work = {shard: ((PROFILES,) if shard in profiles else ()) + (tuple(HISTORY_ASSETS) if shard in history else ())
            for shard in present}
    with_work = {s: assets for s, assets in work.items() if assets}
    return runs + shard_runs(with_work, warehouse.shard_sizes(), instance)


def shard_runs(work: dict[str, tuple[dg.AssetKey, ...]], sizes: dict[str, int],
               instance: dg.DagsterInstance) -> list[PlannedRun]:
    """The shards with work (each with the assets it needs) in as many runs as the instance runs at
    once (the `fmp` pool's limit: one host's 3, or a deployment's hosts' together), each a range of
    consecutive shards holding about as many symbols as the others, materializing the assets any of
    its shards needs. So the key's pace is shared by as many runs as ever, however many shards a day
    touches. (A backfill from the UI keeps a run per shard: there each shard's materialization
    states its own row count.)"""
    shards = [s for s in SHARD_KEYS if s in work]
    planned = []
    runs = pool_limit(instance, FMP_POOL) or RUNS_AT_ONCE
    for group in _balanced_slices(shards, [max(1, sizes.get(s, 0)) for s in shards], runs):
        needed = {key for shard in group for key in work[shard]}
        assets = [key for key in (PROFILES, *HISTORY_ASSETS) if key in needed]
        planned.append(PlannedRun(_names(assets), group[0], group[-1] if len(group) > 1 else None))
    return planned


def shards_of_run(tags: dict[str, str]) -> list[str]:
    """The shards a run covers, from its tags: its one partition, or its range."""
    if RANGE_START_TAG in tags:
        return shard_range(tags[RANGE_START_TAG], tags[RANGE_END_TAG])
    return [tags[PARTITION_TAG]] if tags.get(PARTITION_TAG) in SHARD_KEYS else []


def _balanced_slices(items: list[str], weights: list[int], count: int) -> list[list[str]]:
    """`items` cut, in order, into at most `count` slices of about equal weight."""
    slices: list[list[str]] = []
    total, done = sum(weights), 0
    for item, weight in zip(items, weights):
        if not slices or (len(slices) < count and done >= total * len(slices) / count):
            slices.append([])
        slices[-1].append(item)
        done += weight
    return slices


def _shards_with_due_profiles(warehouse: WarehouseResource, settings: SyncSettings) -> set[str]:
    states = warehouse.profile_states()
    due = due_now(states, settings.profile_max_age_days, warehouse.resting_after_empty("profile"))
    return {state.shard for state in states if state.symbol in due}


def _never_materialized(instance: dg.DagsterInstance, keys: Iterable[dg.AssetKey]) -> set[str]:
    shards: set[str] = set()
    for key in keys:
        done = instance.get_materialized_partitions(key)
        shards |= set(SHARD_KEYS) - set(done)
    return shards


# -- a backfill: what failed, and what is missing -------------------------------------

def check_asset_names(names: Iterable[str]) -> set[str]:
    """The names, if each is an asset; else a `ConfigError` that lists the assets."""
    unknown = sorted(set(names) - set(ASSET_NAMES))
    if unknown:
        raise ConfigError(f"Unknown asset {', '.join(map(repr, unknown))}: use one of {', '.join(ASSET_NAMES)}.")
    return set(names)


def failed_and_missing(instance: dg.DagsterInstance, config: Config, only: set[str] | None = None,
                       all_missing: bool = False) -> list[PlannedRun]:
    """What to run again: FAILED partitions, and missing ones (the shards in a few runs of ranges).

    Missing means: a shard that holds symbols but was never materialized, or
    whose stored history predates a split (a restatement cut short); a trading
    day in a gap after the first day ever run (or, with all_missing, any day
    since the partitions' start). An empty shard has nothing to materialize,
    so it is never missing.
    """
    warehouse = warehouse_resource(config)
    exists = warehouse.exists()
    shards_present = warehouse.shards_present() if exists else set()
    restate = warehouse.shards_needing_restatement() if exists else set()
    by_partition: dict[str | None, list[str]] = defaultdict(list)
    for asset in assets_for(config):
        key = asset.key
        if only and key.to_user_string() not in only:
            continue
        if asset.partitions_def is None:
            if _unpartitioned_needs_run(instance, key):
                by_partition[None].append(key.to_user_string())
            continue
        partitions = _partitions_to_run(instance, asset, all_missing, shards_present)
        if key in HISTORY_ASSETS:
            partitions = sorted(set(partitions) | restate)
        for partition in partitions:
            by_partition[partition].append(key.to_user_string())
    shards = {p: tuple(dg.AssetKey(name) for name in names) for p, names in by_partition.items() if p in SHARD_KEYS}
    planned = [PlannedRun(tuple(names), p) for p, names in by_partition.items() if p not in shards]
    planned += shard_runs(shards, warehouse.shard_sizes() if exists else {}, instance)
    # The universe first: every partitioned asset reads it.
    return sorted(planned, key=lambda r: (r.partition_key is not None, r.partition_key or ""))


def _unpartitioned_needs_run(instance: dg.DagsterInstance, key: dg.AssetKey) -> bool:
    """Never materialized, or the last run that planned it failed."""
    records = instance.get_asset_records([key])
    entry = records[0].asset_entry if records else None
    if entry is None or entry.last_materialization is None:
        return True
    last_run = entry.last_run_id
    if last_run and last_run != entry.last_materialization.run_id:
        run = instance.get_run_by_id(last_run)
        return run is not None and run.status == DagsterRunStatus.FAILURE
    return False


def _partitions_to_run(instance: dg.DagsterInstance, asset: dg.AssetsDefinition,
                       all_missing: bool, shards_present: set[str]) -> list[str]:
    partitions_def = asset.partitions_def
    keys = list(partitions_def.get_partition_keys(current_time=trading.now_utc()))
    status = instance.get_status_by_partition(asset.key, keys, partitions_def) or {}
    failed = [k for k in keys if status.get(k) == AssetPartitionStatus.FAILED]
    if isinstance(partitions_def, dg.StaticPartitionsDefinition):
        missing = [k for k in keys if status.get(k) is None and k in shards_present]
    else:
        # Holidays count for nothing here: they are reported materialized (nothing to
        # hold) before any run, and must not open a "gap" of every day after them.
        touched = [i for i, k in enumerate(keys)
                   if status.get(k) is not None and trading.is_session(dt.date.fromisoformat(k))]
        # A sync always runs the latest session: once there is a universe, that day
        # is due even if the sync that planned it was stopped before its run began.
        latest = latest_session_day().isoformat()
        due_from = keys.index(latest) if shards_present and latest in keys else len(keys)
        first = 0 if all_missing else min(touched[:1] + [due_from])
        missing = [k for i, k in enumerate(keys) if i >= first and status.get(k) is None]
    return [k for k in keys if k in set(failed) | set(missing)]
