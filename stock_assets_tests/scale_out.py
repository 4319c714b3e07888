"""The scale-out configuration (`deploy/`) started for real, as docs/deploy.md starts it: used by its
tests and its benchmark.

Dagster's storage and the lake's catalog in PostgreSQL, Celery's broker and the key's limit in
Redis (servers the caller starts: `servers.py`); Dagster's daemon as the webserver's host runs it;
Celery workers as "hosts", each with its own name and working folder, in a process tree of its own,
sharing only PostgreSQL, Redis and the lake's data path. A sync starts as the schedule starts it
(the universe job, tagged with the sync's id); the daemon's sensor requests the rest and its run
queue hands every run to a worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import redis as redis_client
import yaml

from stock_assets.tags import SYNC_TAG

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CELERY_TASK_TAG = "dagster-celery/task_id"


def scale_out_environment(folder: Path, postgres, redis, runs_at_once: int | None = None) -> dict[str, str]:
    """Every host's environment (docs/deploy.md): new databases, emptied Redis databases, a
    DAGSTER_HOME holding `deploy/dagster.yaml` (with `runs_at_once` as its runs and pool limit: the
    hosts' total concurrency, as docs/deploy.md says to set it), the lake's files under `folder/shared`."""
    home = folder / "dagster_home"
    home.mkdir(parents=True)
    settings = yaml.safe_load((PROJECT / "deploy" / "dagster.yaml").read_text())
    if runs_at_once is not None:
        settings["concurrency"]["runs"]["max_concurrent_runs"] = runs_at_once
        settings["concurrency"]["pools"]["default_limit"] = runs_at_once
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    run = uuid.uuid4().hex[:12]  # the servers may outlive this use: its databases are its own
    for db in (0, 1):  # the broker's and the key's limit (Redis numbers its databases)
        redis_client.Redis.from_url(redis.url(db)).flushdb()
    return {
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_URL": postgres.create_database(f"dagster_{run}"),
        "STOCK_ASSETS_BROKER": redis.url(0),
        "FMP_LIMITER_STATE": redis.url(1),
        "STOCK_ASSETS_CATALOG": postgres.create_database(f"lake_{run}"),
        "STOCK_ASSETS_DATA": str(folder / "shared" / "lake"),
        "PYTHONPATH": str(PROJECT / "deploy"),  # the workers' Celery settings
    }


class ScaleOut:
    """The daemon and the workers of one scale-out platform; every process stopped by `stop`."""

    def __init__(self, folder: Path, env: dict[str, str]):
        self.folder, self.env, self.processes = folder, env, {}

    def start(self, name: str, *command: str) -> None:
        folder = self.folder / name
        folder.mkdir(exist_ok=True)
        self.processes[name] = subprocess.Popen(
            command, cwd=folder, env=self.env, start_new_session=True,  # a process tree of its own
            stdout=open(folder / "log", "w"), stderr=subprocess.STDOUT)

    def worker(self, host: str, concurrency: int = 2) -> None:
        """A Celery worker named `host`, executing up to `concurrency` runs at once."""
        self.start(host, str(BIN / "celery"), "-A", "dagster_celery.app", "worker", "-Q", "dagster",
                   "-n", f"{host}@%h", "--concurrency", str(concurrency), "--loglevel", "INFO")

    def start_sync(self, sync_id: str, hosts: tuple[str, ...] = ("host-a", "host-b"), concurrency: int = 2) -> None:
        """Dagster's tables made, the daemon and the workers started, the sync launched as the schedule does."""
        # Dagster creates its tables on first use, but two first uses at once race in PostgreSQL
        # ("type run_tags already exists"): the deploy creates them once, before any process starts.
        self._dagster("instance", "migrate")
        self.start("daemon", str(BIN / "dagster-daemon"), "run", "-w", str(PROJECT / "workspace.yaml"))
        for host in hosts:
            self.worker(host, concurrency)
        self._dagster("job", "launch", "-w", str(PROJECT / "workspace.yaml"), "-j", "universe",
                      "--tags", json.dumps({SYNC_TAG: sync_id}))

    def _dagster(self, *args: str) -> None:
        done = subprocess.run([str(BIN / "dagster"), *args], cwd=PROJECT, env=self.env, capture_output=True,
                              text=True, timeout=300)
        if done.returncode != 0:
            raise AssertionError(f"dagster {' '.join(args[:2])} failed: {done.stderr[-3000:]}")

    def wait_for_the_sync(self, instance: dg.DagsterInstance, sync_id: str, quiet_s: float = 15.0,
                          timeout_s: float = 900.0) -> list[dg.DagsterRun]:
        """Until every run of the sync has ended and the sensor has asked for no more for `quiet_s`."""
        settled_at, seen, runs = None, -1, []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            runs = sync_runs(instance, sync_id)
            if runs and all(r.is_finished for r in runs):
                if len(runs) != seen:
                    settled_at, seen = time.monotonic(), len(runs)
                elif time.monotonic() - settled_at >= quiet_s:
                    return runs
            else:
                settled_at, seen = None, -1
            time.sleep(1.0)
        raise AssertionError(f"the sync did not end: {[(r.job_name, r.status.value) for r in runs]}\n"
                             + self.log("daemon")[-3000:])

    def log(self, name: str) -> str:
        return (self.folder / name / "log").read_text()

    def kill(self, name: str) -> None:
        """SIGKILL to a process's whole tree, as a power cut would end a host."""
        _signal_tree(self.processes[name], signal.SIGKILL)
        self.processes[name].wait()

    def stop(self) -> None:
        for process in self.processes.values():
            _signal_tree(process, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _signal_tree(process, signal.SIGKILL)
                process.wait()


def sync_runs(instance: dg.DagsterInstance, sync_id: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(tags={SYNC_TAG: sync_id})))


def _signal_tree(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass
