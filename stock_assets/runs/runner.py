"""Executing planned runs: in this process, or on worker processes that never outlive it.

One in-process `materialize` costs ~0.3 s of Dagster overhead, against ~3.5 s
for a new process per run, and a sync is a few dozen runs. So runs go to a
few long-lived worker processes (Dagster's in-process execution is not
thread-safe: it reconfigures logging per run), each executing its share one
after another. Every run lands in the persistent instance, tagged with the
pid and host of the process executing it.

However the command ends, its workers end with it (`workers.WorkerProcess`:
a parent-death signal, one interruption, a hard exit 15 s later); on Ctrl-C
or SIGTERM the command stops its workers within seconds (`Workers.stop`) and
marks any run they left in progress as failed.

A run whose process was killed (SIGKILL, a crash, a power cut) stays STARTED
in the instance: `instance_health.reap_dead_runs` finds such runs by their
pid tag and marks them FAILED, and frees any concurrency slot they held.
"""

from __future__ import annotations

import functools
import multiprocessing
import re
import signal
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for

import dagster as dg

from stock_assets.config import Config
from stock_assets.runs.instance_health import RUNS_AT_ONCE, process_tags, reap_dead_runs
from stock_assets.runs.plan import PlannedRun
from stock_assets.tags import BACKFILL_TAG, SYNC_TAG
from stock_assets.runs.workers import WorkerProcess, quiet_interruptions_in_cleanup

# The terminal shows the command's own lines; Dagster's step-by-step events stay
# in the instance (the UI shows them), and its console stays quiet: a failure is
# summed up by the command in a few lines.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# How long the command waits for interrupted workers before killing them.
STOP_GRACE_S = 8.0


@dataclass
class RunOutcome:
    description: str
    run_id: str | None
    success: bool
    seconds: float
    error: str | None = None  # the first error, one line


class Interrupted(KeyboardInterrupt):
    """The command received SIGINT or SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# -- what became of a run -----------------------------------------------------------

def runs_of_batch(instance: dg.DagsterInstance, batch_id: str) -> list[dg.DagsterRun]:
    """The runs of one sync or backfill, oldest first."""
    tag = BACKFILL_TAG if batch_id.startswith("backfill-") else SYNC_TAG
    return list(reversed(instance.get_runs(dg.RunsFilter(tags={tag: batch_id}))))


def failed_runs_message(instance: dg.DagsterInstance, run_id: str | None) -> str | None:
    """The first error of a failed run, one line: what the step raised, else why the run failed."""
    if run_id is None:
        return None
    entries = instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_FAILURE,
                                                 dg.DagsterEventType.RUN_FAILURE})
    # What a step raised says more than the run's "steps failed".
    for entry in sorted(entries, key=lambda e: e.dagster_event.event_type != dg.DagsterEventType.STEP_FAILURE):
        error = getattr(entry.dagster_event.event_specific_data, "error", None)
        text = _first_line(error) if error is not None else entry.user_message
        if text:
            return text
    return None


def _first_line(error) -> str:
    """The innermost cause of a serialized error: what really went wrong."""
    while error.cause is not None and not error.message.strip():
        error = error.cause
    root = error
    while root.cause is not None:
        root = root.cause
    message = (root.message or error.message).strip()
    line = message.splitlines()[0] if message else root.cls_name or "error"
    # Dagster starts the text with the class's dotted path: "stock_assets.fmp.errors.FMPAuthError: ..."
    prefix = re.match(rf"^(?:[\w.]+\.)?{re.escape(root.cls_name)}: ", line) if root.cls_name else None
    return line[prefix.end():] if prefix else line


# -- one run in this process ------------------------------------------------------

def execute(instance: dg.DagsterInstance, config: Config, planned: PlannedRun, tags: dict[str, str]) -> RunOutcome:
    """Materialize one planned run in this process."""
    from stock_assets.defs.assets import assets_for
    from stock_assets.defs.resources import all_resources

    started = time.monotonic()
    result = dg.materialize(
        assets_for(config), selection=planned.asset_keys, partition_key=planned.single_partition,
        instance=instance, resources=all_resources(config), raise_on_error=False, run_config=QUIET_CONSOLE,
        tags={**tags, **planned.range_tags, **process_tags()})
    error = None if result.success else failed_runs_message(instance, result.run_id)
    return RunOutcome(planned.describe(), result.run_id, result.success, time.monotonic() - started, error)


# -- worker processes ------------------------------------------------------------------

class Workers:
    """Worker processes executing planned runs, one at a time each.

    Use as a context manager: leaving it (normally or by an exception) stops
    every worker; `map` yields each run with its outcome as it ends.
    """

    def __init__(self, instance: dg.DagsterInstance, config: Config, count: int):
        self._instance, self._config = instance, config
        self._context = multiprocessing.get_context("spawn")
        self._count = count
        self._workers: list[WorkerProcess] = []

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop(graceful=exc_type is None)

    def map(self, planned: Sequence[PlannedRun], tags: dict[str, str]) -> Iterator[tuple[PlannedRun, RunOutcome]]:
        todo = deque(planned)
        busy: dict[WorkerProcess, PlannedRun] = {}
        while todo or busy:
            while todo and len(busy) < self._count:
                worker = self._idle_worker(busy)
                busy[worker] = todo.popleft()
                worker.send(functools.partial(execute, config=self._config, planned=busy[worker], tags=tags))
            ready = wait_for([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for worker in list(busy):
                if worker.conn not in ready and worker.process.sentinel not in ready:
                    continue
                outcome = worker.answer()
                run = busy.pop(worker)
                yield run, outcome if outcome is not None else self._died(worker, run)

    def _idle_worker(self, busy: dict) -> WorkerProcess:
        for worker in self._workers:
            if worker not in busy and worker.process.is_alive():
                return worker
        worker = WorkerProcess(self._context, self._instance.root_directory)
        self._workers.append(worker)
        return worker

    def _died(self, worker: WorkerProcess, planned: PlannedRun) -> RunOutcome:
        self._workers.remove(worker)
        worker.process.join()
        reaped = reap_dead_runs(self._instance)
        return RunOutcome(planned.describe(), reaped[0] if reaped else None, False, 0.0,
                          f"the worker process ended unexpectedly (exit code {worker.process.exitcode})")

    def stop(self, graceful: bool) -> None:
        """End every worker: ask nicely when all went well; else interrupt, wait, kill."""
        for worker in self._workers:
            if worker.process.is_alive():
                if not graceful:
                    # SIGTERM interrupts the run in progress (Dagster ends it FAILURE); Dagster
                    # takes the signal over while it executes a run, so the worker may not see it
                    # itself: the stop message below is what it reads once its run has ended.
                    worker.process.terminate()
                worker.send(None)
        deadline = time.monotonic() + STOP_GRACE_S
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers.clear()


# -- the command's side ------------------------------------------------------------------

_SIGNALLED: list[int] = []  # the signal that interrupted this command, if any


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM become `Interrupted` in the main thread of a command.

    Dagster treats a KeyboardInterrupt inside a run as the run's interruption
    (it ends the run FAILURE and returns), so the signal is remembered and
    `raise_if_interrupted()` raises it again once the in-process run returned.
    """
    def interrupt(signum, frame):
        # Once is enough: the stop that follows must not be interrupted in turn.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _SIGNALLED.append(signum)
        raise Interrupted(signum)

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    _SIGNALLED.clear()
    quiet_interruptions_in_cleanup()
    for signum in saved:
        signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def raise_if_interrupted() -> None:
    if _SIGNALLED:
        raise Interrupted(_SIGNALLED[0])


def execute_all(instance: dg.DagsterInstance, config: Config, planned: Sequence[PlannedRun], tags: dict[str, str],
                reporter, runs_at_once: int = RUNS_AT_ONCE) -> list[RunOutcome]:
    """Execute runs, unpartitioned ones (the universe) first in this process, the rest on workers.

    Each outcome is reported as its run ends; they are returned in planned order.
    """
    outcomes: dict[PlannedRun, RunOutcome] = {}
    for p in [p for p in planned if p.partition_key is None]:
        outcomes[p] = execute(instance, config, p, tags)
        raise_if_interrupted()
        report_outcome(outcomes[p], reporter)
    rest = [p for p in planned if p.partition_key is not None]
    if rest:
        with Workers(instance, config, min(runs_at_once, len(rest))) as workers:
            for p, outcome in workers.map(rest, tags):
                outcomes[p] = outcome
                report_outcome(outcome, reporter)
    return [outcomes[p] for p in planned]


def report_outcome(outcome: RunOutcome, reporter) -> None:
    run = f"run {outcome.run_id[:8]}" if outcome.run_id else "no run"
    line = (f"{'ok    ' if outcome.success else 'FAILED'} {outcome.description:<58} "
            f"{outcome.seconds:6.1f}s  {run}")
    if outcome.error:
        line += f"\n         {outcome.error}"
    reporter.finished(line, outcome.success)
