"""The daily sync, headless: the same plan as the schedule, run from this command.

One in-process `materialize` per run costs ~0.3 s a step, against ~3.5 s for
a new process per run, and a sync is a few dozen runs. So the runs are spread
over two long-lived worker processes (Dagster's in-process execution is not
thread-safe: it reconfigures logging per run), each executing its share one
after another. Both draw from the one shared, file-backed rate limiter, so
one run's Dagster overhead overlaps the other's API calls. Every run lands
in the persistent instance, tagged with the sync's id, so the UI shows it and
`backfill-failed` can pick up what failed.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

import dagster as dg

from stock_assets.jobs import PlannedRun, plan_after_universe
from stock_assets.partitions import latest_session_day
from stock_assets.progress import PlainReporter, Reporter
from stock_assets.tags import SYNC_TAG
from stock_assets.recovery import process_tags, reap_dead_runs

RUNS_AT_ONCE = 2
# The terminal shows the sync's own lines; Dagster's step-by-step events stay in
# the instance (the UI shows them) and only warnings reach the console.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class RunOutcome:
    description: str
    run_id: str
    success: bool
    seconds: float


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


def run_sync(day: dt.date | None = None, reporter: Reporter | None = None,
             runs_at_once: int = RUNS_AT_ONCE, log=None) -> SyncOutcome:
    """Run the sync on the instance at DAGSTER_HOME with resources from the environment.

    Progress goes to `reporter` (or, simpler, to a `log(line)` callable).
    """
    reporter = reporter or PlainReporter(write=log)
    log = reporter.say
    instance, resources = _context()
    reaped = reap_dead_runs(instance)
    if reaped:
        log(f"Marked {len(reaped)} run(s) of killed processes as failed: {', '.join(r[:8] for r in reaped)}")
    day = day or latest_session_day()  # its partition exists (the window opens at 17:00 ET)
    outcome = SyncOutcome(f"sync-{dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}", day)
    started = time.monotonic()
    log(f"Sync {outcome.sync_id} for the {day} session")
    tags = {SYNC_TAG: outcome.sync_id}
    reporter.planned(1)
    universe = execute(PlannedRun(("symbols",)), tags)
    _say(universe, reporter)
    outcome.runs.append(universe)
    if universe.success:
        planned = plan_after_universe(resources["warehouse"], instance, day, resources["settings"])
        reporter.planned(len(planned))
        outcome.runs += execute_all(planned, tags, reporter, runs_at_once)
    else:
        log("The universe could not be refreshed: nothing else was run.")
    outcome.seconds = time.monotonic() - started
    return outcome


def execute_all(planned: list[PlannedRun], tags: dict[str, str], reporter: Reporter,
                runs_at_once: int = RUNS_AT_ONCE) -> list[RunOutcome]:
    """Execute runs in worker processes, unpartitioned ones (the universe) first."""
    first = [p for p in planned if p.partition_key is None]
    outcomes = [execute(p, tags) for p in first]
    for outcome in outcomes:
        _say(outcome, reporter)
    rest = [p for p in planned if p.partition_key is not None]
    if rest:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(runs_at_once, len(rest)), mp_context=spawn) as pool:
            for outcome in pool.map(execute, rest, [tags] * len(rest)):
                _say(outcome, reporter)
                outcomes.append(outcome)
    return outcomes


def _context() -> tuple[dg.DagsterInstance, dict]:
    """One instance and one set of resources per process and configuration."""
    return _context_for(tuple(os.environ.get(name) for name in CONFIG_VARIABLES))


CONFIG_VARIABLES = ("DAGSTER_HOME", "STOCK_ASSETS_DB", "FMP_API_KEY", "FMP_BASE_URL", "FMP_PLAN",
                    "FMP_RATE_LIMIT_PER_MIN", "FMP_LIMITER_STATE", "STOCK_ASSETS_HISTORY_START")


@lru_cache(maxsize=4)
def _context_for(config: tuple[str | None, ...]) -> tuple[dg.DagsterInstance, dict]:
    from stock_assets.resources import all_resources

    return dg.DagsterInstance.get(), all_resources()


def execute(planned: PlannedRun, tags: dict[str, str]) -> RunOutcome:
    """Materialize one planned run in this process."""
    from stock_assets.assets import ALL_ASSETS

    instance, resources = _context()
    started = time.monotonic()
    result = dg.materialize(
        ALL_ASSETS, selection=planned.asset_keys, partition_key=planned.partition_key,
        instance=instance, resources=resources, raise_on_error=False, run_config=QUIET_CONSOLE,
        tags={**tags, **process_tags()})
    return RunOutcome(planned.describe(), result.run_id, result.success, time.monotonic() - started)


def _say(result: RunOutcome, reporter: Reporter) -> None:
    reporter.finished(f"{'ok    ' if result.success else 'FAILED'} {result.description:<58} "
                      f"{result.seconds:6.1f}s  run {result.run_id[:8]}", result.success)
