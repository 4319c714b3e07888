"""`WorkerRunLauncher`: the daemon's runs execute on long-lived worker processes.

Dagster's default launcher starts a new Python process for every run (the code
server spawns `execute_run`), which imports Dagster and this code again: ~1.9 s
of CPU, ~3.5 s between launch and RUN_START on a loaded 2-core machine, while a
shard run of a small universe works for ~2 s. Measured under `dagster dev`
(bench/bench_daemon.py, 300 symbols): 2.60 x the headless sync's wall, 0.70
runs in flight of 2. The headless sync keeps worker processes that import once
(`runner.Workers`); this launcher gives the schedule's and the UI's runs the
same workers. It is the instance's launcher in `dagster_home/dagster.yaml`.

- One thread of the launching process (the daemon's run queue) owns the
  workers: they end with it (a worker gets SIGTERM when the thread that
  started it ends, and a watchdog checks its parent).
- A worker executes a launched run as Dagster's own run worker does
  (`core_execute_run`), tagged with its pid, so `reap_dead_runs` and run
  monitoring (`check_run_worker_health`) see a worker that died.
- Terminate (the UI's button) interrupts the run's worker (SIGINT): Dagster
  ends the run CANCELED (so does the worker, if the signal comes while it is
  still loading the code, and then it exits).
- A worker runs one version of the code: one started before a source file
  changed (the UI's "Reload") is retired before it takes another run; after
  `idle_exit_seconds` without a run, the idle workers exit, giving their
  memory back. When the daemon stops, its workers' runs are interrupted.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Mapping
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.events import EngineEventData
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from stock_assets.instance_health import alive, process_tags, reap_dead_runs
from stock_assets.tags import HOST_TAG, PID_TAG
from stock_assets.workers import WorkerProcess

PACKAGE = Path(__file__).resolve().parent


def execute_launched(instance: DagsterInstance, run_id: str) -> str:
    """Execute a launched run in this (worker) process, as Dagster's run worker would."""
    from dagster._utils.hosted_user_process import recon_job_from_origin
    from dagster._grpc.impl import core_execute_run

    run = instance.get_run_by_id(run_id)
    if run is None or run.job_code_origin is None:
        return f"run {run_id} not found, or without its code's origin"
    instance.add_run_tags(run_id, process_tags())
    instance.report_engine_event(f"Executing on worker process {os.getpid()} (the code is loaded once a worker).",
                                 run, EngineEventData.in_process(os.getpid()))
    try:
        for _ in core_execute_run(recon_job_from_origin(run.job_code_origin), run, instance, inject_env_vars=False):
            pass
    except KeyboardInterrupt:
        # Terminated while the code was still loading, before Dagster took the signal over.
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status == DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message="Canceled while its worker was loading the code.")
        raise
    except Exception as error:  # noqa: BLE001 - already in the run's event log; the worker serves on
        return f"{type(error).__name__}: {error}"
    finished = instance.get_run_by_id(run_id)
    return finished.status.value if finished else "gone"


def code_version() -> tuple[tuple[str, int], ...]:
    """The package's source files and their modification times: a worker runs one version."""
    version = []
    for path in PACKAGE.rglob("*.py"):
        try:
            version.append((str(path), path.stat().st_mtime_ns))
        except OSError:
            continue  # gone while listed (a checkout), or an editor's dangling lock link
    return tuple(sorted(version))


class WorkerRunLauncher(RunLauncher, ConfigurableClass):
    """Runs execute on long-lived worker processes of the launching process (see the module)."""

    def __init__(self, idle_exit_seconds: float = 600.0, inst_data: ConfigurableClassData | None = None):
        self._inst_data = inst_data
        self._idle_exit_seconds = idle_exit_seconds
        self._lock = threading.Lock()
        self._owner: _WorkerPool | None = None
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict:
        from dagster import Field

        return {"idle_exit_seconds": Field(float, default_value=600.0, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, **config_value)

    def launch_run(self, context: LaunchRunContext) -> None:
        with self._lock:
            if self._owner is None or not self._owner.is_alive():
                self._owner = _WorkerPool(self._instance, self._idle_exit_seconds)
                self._owner.start()
        self._owner.submit(context.dagster_run.run_id)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        pid = _worker_pid(run)
        if pid is None or not alive(pid):
            # Not begun on a worker yet (it will find the run canceled and not start it), or its worker is gone.
            self._instance.report_run_canceled(run, message="Canceled before a worker began it, or after it died.")
            return True
        os.kill(pid, signal.SIGINT)  # the run ends as Dagster ends an interrupted run: CANCELED
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid = _worker_pid(run)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no worker has begun the run yet")
        if alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.FAILED, f"the worker process (pid {pid}) is gone")

    def dispose(self) -> None:
        with self._lock:
            if self._owner is not None:
                self._owner.stop()
                self._owner = None


def _worker_pid(run: DagsterRun) -> int | None:
    pid = run.tags.get(PID_TAG)
    if pid is None or run.tags.get(HOST_TAG) != socket.gethostname():
        return None
    return int(pid)


class _WorkerPool(threading.Thread):
    """The thread that starts the workers, hands them runs, and retires them.

    Runs arrive on a pipe, so one `wait` sees new runs, finished runs and dead
    workers alike. Once a run has come, there are as many workers as the run
    queue admits runs at once (`max_concurrent_runs`), started ahead.
    """

    def __init__(self, instance: DagsterInstance, idle_exit_seconds: float):
        super().__init__(name="stock-assets-run-workers", daemon=True)
        self._instance, self._idle_exit_seconds = instance, idle_exit_seconds
        self._size = instance.get_concurrency_config().run_queue_config.max_concurrent_runs or 1
        self._context = multiprocessing.get_context("spawn")
        self._inbox, self._outbox = self._context.Pipe(duplex=False)
        self._send_lock = threading.Lock()
        self._idle: list[tuple[WorkerProcess, tuple]] = []  # with the code version each loaded
        self._busy: dict[WorkerProcess, tuple[str, tuple]] = {}  # the run each executes, and its version

    def submit(self, run_id: str | None) -> None:
        with self._send_lock:
            self._outbox.send(run_id)

    def stop(self) -> None:
        self.submit(None)
        self.join(timeout=30)

    def run(self) -> None:
        try:
            while True:
                busy = list(self._busy)
                ready = wait_for([self._inbox] + [w.conn for w in busy] + [w.process.sentinel for w in busy],
                                 timeout=self._idle_exit_seconds if self._idle else None)
                if not ready:  # idle long enough: give the memory back
                    _retire([w for w, _ in self._idle])
                    self._idle.clear()
                for worker in busy:
                    if worker.conn not in ready and worker.process.sentinel not in ready:
                        continue
                    run_id, version = self._busy.pop(worker)
                    if worker.answer() is not None and worker.process.is_alive():
                        self._idle.append((worker, version))
                    else:  # it died, or exits after an interrupted run
                        worker.process.join(timeout=30)
                        self._fail_if_unfinished(run_id, worker.process.exitcode)
                if self._inbox in ready:
                    run_id = self._inbox.recv()
                    if run_id is None:
                        return
                    self._hand(run_id)
        finally:
            for worker in self._busy:  # their runs end as Dagster ends interrupted runs
                os.kill(worker.process.pid, signal.SIGINT)
            _retire([w for w, _ in self._idle] + list(self._busy))

    def _fail_if_unfinished(self, run_id: str, exitcode: int | None) -> None:
        """A run whose worker died ends FAILED, not STARTED (or STARTING, if it never began) forever."""
        reap_dead_runs(self._instance)
        run = self._instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            self._instance.report_run_failed(run, message=f"Its worker process ended (exit code {exitcode}).")

    def _hand(self, run_id: str) -> None:
        """To an idle worker on today's code, else to a new one; workers on older code retire."""
        version = code_version()
        worker = None
        while self._idle and worker is None:
            candidate, loaded = self._idle.pop()
            if loaded == version and candidate.process.is_alive():
                worker = candidate
            else:
                _retire([candidate])
        worker = worker or WorkerProcess(self._context, self._instance.root_directory)
        self._busy[worker] = (run_id, version)
        worker.send(functools.partial(execute_launched, run_id=run_id))
        # The runs the queue admits next find a worker that has loaded the code already.
        while len(self._idle) + len(self._busy) < self._size:
            self._idle.append((WorkerProcess(self._context, self._instance.root_directory), version))


def _retire(workers: list[WorkerProcess], grace_s: float = 20.0) -> None:
    """Ask each to stop; those still alive after `grace_s` (all together) are killed."""
    for worker in workers:
        worker.send(None)
    deadline = time.monotonic() + grace_s
    for worker in workers:
        worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()
