"""Runs whose process is gone, and the `fmp` pool's slots: found, mended, or named.

- A run stays STARTED when its process is killed with whatever watched it: a
  headless command's worker with the command, the run process Dagster's default
  launcher started with the daemon and its code server (which fails its own
  runs' dead processes while it lives). The headless runs carry the pid and
  host of their process (`process_tags`); the default launcher's runs, the pid
  Dagster records as it starts them. `reap_dead_runs` marks FAILED those whose
  process no longer exists, so their partitions show FAILED and are picked up
  again, and frees their slots.
- A step-level concurrency slot is never given back when its process is
  killed; `free_stale_slots` frees the slots (claimed or queued for) of every
  run no longer in progress.
- `runs_the_pool_admits` counts the live runs that hold the pool (one slot a
  run, at the instance's run granularity) and names them when they hold it all.

Used by the headless commands before they start runs, and by the daemon's
`housekeeping` sensor.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg
from dagster import DagsterRunStatus

from stock_assets.errors import CommandError
from stock_assets.tags import HOST_TAG, PID_TAG

RUNS_AT_ONCE = 3  # as many as the `fmp` pool admits (dagster_home/dagster.yaml)
IN_PROGRESS = [DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.NOT_STARTED,
               DagsterRunStatus.QUEUED, DagsterRunStatus.CANCELING]


def process_tags() -> dict[str, str]:
    """Tags that let a later process tell whether this one is still alive."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (a command's workers and theirs), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _zombie(pid: int) -> bool:
    """A killed process nobody has collected yet still answers kill(0); Linux says it is a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark FAILED the in-progress runs of this host whose process no longer exists.

    Their concurrency slots are freed too: without the daemon, nothing else would.
    """
    reaped = []
    for run in instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS)):
        pid = _process_of(instance, run)
        if pid is None or pid == os.getpid() or alive(pid):
            continue
        # Its process may have recorded the run's end and exited since the runs were listed: once
        # the process is gone the status can change no more, so it is read again.
        run = instance.get_run_by_id(run.run_id)
        if run is None or run.status not in IN_PROGRESS:
            continue
        instance.report_run_failed(
            run, message=f"The process running this run (pid {pid}) is gone: it was killed or "
                         f"crashed. Its partitions are marked failed; `stock-assets backfill-failed` "
                         f"fetches what is missing.")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(run.run_id)
    return reaped


def _process_of(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int | None:
    """The pid of the run's process, if it runs on this host: a headless run's tag, else the pid
    Dagster records when it starts a run's process (this host's, with the default launcher only:
    another launcher's runs may run elsewhere, and it watches them itself)."""
    if PID_TAG in run.tags:
        return int(run.tags[PID_TAG]) if run.tags.get(HOST_TAG) == socket.gethostname() else None
    if not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
        return None
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        pid = entry.dagster_event.event_specific_data.metadata.get("pid")
        if pid is not None:
            return int(pid.value)
    return None


def fail_own_unfinished_runs(instance: dg.DagsterInstance) -> None:
    """Mark FAILED the runs of this process still in progress: a signal that lands between a
    run's creation and its start leaves it NOT_STARTED, which Dagster's own handling misses."""
    for run in instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS, tags={PID_TAG: str(os.getpid())})):
        instance.report_run_failed(run, message="Interrupted before it could start: its command was stopped. "
                                                "`stock-assets backfill-failed` fetches what is missing.")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


# -- the fmp pool ------------------------------------------------------------------------

class PoolBusy(CommandError):
    """Live runs hold every slot of the pool the sync's runs need."""


def free_stale_slots(instance: dg.DagsterInstance) -> list[str]:
    """Free the concurrency slots (claimed or queued for) of runs no longer in progress.

    A step whose process was killed never gives its slot back, and only the
    daemon's run monitoring would free it; every later step of the pool would
    wait for it forever.
    """
    storage = instance.event_log_storage
    freed = []
    for run_id in sorted(storage.get_concurrency_run_ids()):
        run = instance.get_run_by_id(run_id)
        if run is None or run.status not in IN_PROGRESS:
            storage.free_concurrency_slots_for_run(run_id)
            freed.append(run_id)
    return freed


def pool_holders(instance: dg.DagsterInstance, pool: str) -> list[dg.DagsterRun]:
    """Runs in progress that use the pool: each takes one of its slots (run granularity)."""
    running = instance.get_runs(dg.RunsFilter(statuses=[
        DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]))
    return [r for r in running if r.run_op_concurrency and pool in (r.run_op_concurrency.all_pools or ())]


def pool_limit(instance: dg.DagsterInstance, pool: str) -> int | None:
    """How many runs the pool admits at once: its own limit, else the instance's default for pools."""
    limit = instance.event_log_storage.get_concurrency_info(pool).limit
    return instance.global_op_concurrency_default_limit if limit is None else limit


def runs_the_pool_admits(instance: dg.DagsterInstance, pool: str, wanted: int = RUNS_AT_ONCE) -> int:
    """How many runs may start now; `PoolBusy` names the runs that hold the pool when none may."""
    limit = pool_limit(instance, pool)
    if limit is None:
        return wanted
    holders = pool_holders(instance, pool)
    if len(holders) >= limit:
        names = "; ".join(f"{r.run_id[:8]} ({r.job_name}"
                          f"{', ' + r.tags['dagster/partition'] if 'dagster/partition' in r.tags else ''}"
                          f", {r.status.value})" for r in holders)
        raise PoolBusy(f"The `{pool}` pool admits {limit} run(s) at once and these hold it: {names}. "
                       f"Wait for them to end, or terminate them in the Dagster UI (Runs), then run this again.")
    return min(wanted, limit - len(holders))


def prepare(instance: dg.DagsterInstance, pool: str, say) -> int:
    """Before starting runs: reap dead runs, free stale slots; returns the runs the pool admits."""
    reaped = reap_dead_runs(instance)
    if reaped:
        say(f"Marked {len(reaped)} run(s) of killed processes as failed: {', '.join(r[:8] for r in reaped)}")
    freed = free_stale_slots(instance)
    if freed:
        say(f"Freed the concurrency slots still held by {len(freed)} finished run(s): "
            f"{', '.join(r[:8] for r in freed)}")
    return runs_the_pool_admits(instance, pool)
