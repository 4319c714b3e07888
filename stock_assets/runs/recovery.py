"""Recovery: partition status is the checkpoint.

`relaunch` materializes exactly the partitions `plan.failed_and_missing`
found (FAILED, or never materialized inside the range the asset has been
used over), a run per trading day and a few runs of shard ranges, tagged as one backfill. Runs whose
process was killed are reaped first (`instance_health.reap_dead_runs`), so
their partitions show FAILED and are picked up.
"""

from __future__ import annotations

import uuid

import dagster as dg

from stock_assets.config import Config
from stock_assets.runs.instance_health import RUNS_AT_ONCE
from stock_assets.runs.plan import PlannedRun
from stock_assets.progress import PlainReporter, Reporter
from stock_assets.runs.runner import RunOutcome, execute_all
from stock_assets.tags import BACKFILL_TAG


def new_backfill_id() -> str:
    return f"backfill-{uuid.uuid4().hex[:8]}"


def relaunch(instance: dg.DagsterInstance, config: Config, planned: list[PlannedRun], reporter: Reporter | None = None,
             runs_at_once: int = RUNS_AT_ONCE, log=None, backfill_id: str | None = None) -> list[RunOutcome]:
    """Run exactly these partitions on the persistent instance, tagged as one backfill."""
    reporter = reporter or PlainReporter(write=log)
    reporter.planned(len(planned))
    tags = {BACKFILL_TAG: backfill_id or new_backfill_id()}
    return execute_all(instance, config, planned, tags, reporter, runs_at_once)
