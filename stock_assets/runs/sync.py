"""The daily sync, headless: the same plan as the schedule, run from this command.

The universe run goes first, in this process; the runs it makes due (the
day's session, the shards with work) go to worker processes (`runner`),
which share the one file-backed rate limiter, so one run's Dagster overhead
overlaps the other's API calls. Every run lands in the persistent instance,
tagged with the sync's id, so the UI shows it and `backfill-failed` can pick
up what failed.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass, field

from stock_assets.defs.assets.common import FMP_POOL
from stock_assets.config import Config
from stock_assets.held_partitions import report_held_partitions
from stock_assets.runs.home import open_instance
from stock_assets.runs.instance_health import prepare
from stock_assets.runs.plan import PlannedRun, plan_after_universe, session_run, sessions_to_sync
from stock_assets.defs.partitions import latest_session_day, trading_days_from
from stock_assets.progress import PlainReporter, Reporter
from stock_assets.defs.resources import settings_resource, warehouse_resource
from stock_assets.runs.runner import RunOutcome, execute_all
from stock_assets.tags import SYNC_TAG


@dataclass
class SyncOutcome:
    sync_id: str
    day: dt.date
    runs: list[RunOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def success(self) -> bool:
        return all(r.success for r in self.runs)

    @property
    def failed(self) -> list[RunOutcome]:
        return [r for r in self.runs if not r.success]


def new_sync_id() -> str:
    return f"sync-{dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def run_sync(config: Config, day: dt.date | None = None, reporter: Reporter | None = None, log=None,
             sync_id: str | None = None) -> SyncOutcome:
    """Run the sync of `day`'s session (default: the last closed one) on the instance at DAGSTER_HOME.

    Progress goes to `reporter` (or, simpler, to a `log(line)` callable).
    """
    reporter = reporter or PlainReporter(write=log)
    instance = open_instance(config.dagster_home)
    outcome = SyncOutcome(sync_id or new_sync_id(), day or latest_session_day())
    started = time.monotonic()
    runs_at_once = prepare(instance, FMP_POOL, reporter.say)
    reporter.say(f"Sync {outcome.sync_id} for the {outcome.day} session")
    tags = {SYNC_TAG: outcome.sync_id}
    reporter.planned(1)
    outcome.runs += execute_all(instance, config, [PlannedRun(("symbols",))], tags, reporter)
    if outcome.success:
        outcome.runs += _after_universe(instance, config, outcome.day, tags, reporter, runs_at_once)
    else:
        reporter.say("The universe could not be refreshed: nothing else was run.")
    report_held_partitions(instance, warehouse_resource(config), trading_days_from(config.trading_days_start))
    outcome.seconds = time.monotonic() - started
    return outcome


def _after_universe(instance, config: Config, day: dt.date, tags: dict[str, str], reporter: Reporter,
                    runs_at_once: int) -> list[RunOutcome]:
    """The day's splits beside the oldest session to store (it needs no split: as the sensor requests
    them), then the other sessions and the shards with work: planned after the splits, so that a split
    symbol's shard is one. The oldest session goes first because its history calls reach through the
    latest: the later sessions of a gap then find their bars stored."""
    splits, first = PlannedRun(("splits",), day.isoformat()), session_run(sessions_to_sync(instance, day)[0])
    reporter.planned(2)
    runs = execute_all(instance, config, [splits, first], tags, reporter, runs_at_once)
    if not next(r.success for r in runs if r.description == splits.describe()):
        reporter.say("The day's splits could not be fetched: no shard was run (a split symbol's history "
                     "would stay in the old shares). `stock-assets backfill-failed` fetches them; the next "
                     "sync plans the shards.")
        return runs
    planned = [p for p in plan_after_universe(warehouse_resource(config), instance, day, settings_resource(config),
                                              config.plan) if p != first]
    reporter.planned(len(planned))
    return runs + execute_all(instance, config, planned, tags, reporter, runs_at_once)
