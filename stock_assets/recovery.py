"""Recovery: partition status is the checkpoint.

- `failed_and_missing`: per asset, the partitions that are FAILED, or that
  were never materialized inside the range the asset has been used over.
- `relaunch`: materialize exactly those partitions, grouped into one run per
  partition key, tagged as one backfill.

Runs whose process was killed are reaped (`runner.reap_dead_runs`) before
either, so their partitions show FAILED and are picked up.
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import Iterable

import dagster as dg
from dagster import AssetPartitionStatus, DagsterRunStatus

from stock_assets.assets import ALL_ASSETS
from stock_assets.errors import ConfigError
from stock_assets.jobs import PlannedRun
from stock_assets.partitions import latest_session_day
from stock_assets.progress import PlainReporter, Reporter
from stock_assets.runner import RUNS_AT_ONCE, RunOutcome, execute_all
from stock_assets.tags import BACKFILL_TAG

ASSET_NAMES = [asset.key.to_user_string() for asset in ALL_ASSETS]


def check_asset_names(names: Iterable[str]) -> set[str]:
    """The names, if each is an asset; else a `ConfigError` that lists the assets."""
    unknown = sorted(set(names) - set(ASSET_NAMES))
    if unknown:
        raise ConfigError(f"Unknown asset {', '.join(map(repr, unknown))}: use one of {', '.join(ASSET_NAMES)}.")
    return set(names)


def failed_and_missing(instance: dg.DagsterInstance, only: set[str] | None = None,
                       all_missing: bool = False, warehouse=None) -> list[PlannedRun]:
    """What to run again: FAILED partitions, and missing ones.

    Missing means: a shard that holds symbols but was never materialized; a
    trading day in a gap after the first day ever run (or, with all_missing,
    any day since the partitions' start). An empty shard has nothing to
    materialize, so it is never missing.
    """
    if warehouse is None:
        from stock_assets.resources import warehouse_resource

        warehouse = warehouse_resource()
    shards_present = warehouse.shards_present() if os.path.exists(warehouse.database) else set()
    by_partition: dict[str | None, list[str]] = defaultdict(list)
    for asset in ALL_ASSETS:
        key = asset.key
        if only and key.to_user_string() not in only:
            continue
        if asset.partitions_def is None:
            if _unpartitioned_needs_run(instance, key):
                by_partition[None].append(key.to_user_string())
            continue
        for partition in _partitions_to_run(instance, asset, all_missing, shards_present):
            by_partition[partition].append(key.to_user_string())
    planned = [PlannedRun(tuple(names), p) for p, names in by_partition.items()]
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
    keys = list(partitions_def.get_partition_keys())
    status = instance.get_status_by_partition(asset.key, keys, partitions_def) or {}
    failed = [k for k in keys if status.get(k) == AssetPartitionStatus.FAILED]
    if isinstance(partitions_def, dg.StaticPartitionsDefinition):
        missing = [k for k in keys if status.get(k) is None and k in shards_present]
    else:
        touched = [i for i, k in enumerate(keys) if status.get(k) is not None]
        # A sync always runs the latest session: once there is a universe, that day
        # is due even if the sync that planned it was stopped before its run began.
        latest = latest_session_day().isoformat()
        due_from = keys.index(latest) if shards_present and latest in keys else len(keys)
        first = 0 if all_missing else min(touched[:1] + [due_from])
        missing = [k for i, k in enumerate(keys) if i >= first and status.get(k) is None]
    return [k for k in keys if k in set(failed) | set(missing)]


def new_backfill_id() -> str:
    return f"backfill-{uuid.uuid4().hex[:8]}"


def relaunch(instance: dg.DagsterInstance, planned: list[PlannedRun], reporter: Reporter | None = None,
             runs_at_once: int = RUNS_AT_ONCE, log=None, backfill_id: str | None = None) -> list[RunOutcome]:
    """Run exactly these partitions on the persistent instance, tagged as one backfill."""
    reporter = reporter or PlainReporter(write=log)
    reporter.planned(len(planned))
    tags = {BACKFILL_TAG: backfill_id or new_backfill_id()}
    return execute_all(instance, planned, tags, reporter, runs_at_once)
