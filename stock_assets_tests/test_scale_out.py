"""The scale-out configuration (`deploy/`), run for real: Dagster's storage in PostgreSQL, runs on
Celery workers through Redis, one key's limit in Redis, the warehouse's catalog in PostgreSQL.

The test starts the servers itself (Debian's PostgreSQL and Redis, temporary folders, free ports),
Dagster's daemon as the webserver's host would, and two Celery workers as two hosts would: each
with its own name and working folder, in a process tree of its own, sharing only PostgreSQL,
Redis and the lake's data path. A sync starts as the schedule starts it (the universe job, tagged
with the sync's id); the daemon's sensor requests the rest and its run queue hands every run to a
worker.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import celery
import dagster as dg
import pytest

from stock_assets.tags import SYNC_TAG
from stock_assets.warehouse import TABLES
from stock_assets_tests.conftest import PROJECT, assert_warehouse_matches_truth, make_platform

BIN = Path(sys.executable).parent
CELERY_TASK_TAG = "dagster-celery/task_id"


class ScaleOut:
    """The servers' environment, the daemon and the workers; every process stopped by `stop`."""

    def __init__(self, tmp_path: Path, env: dict[str, str]):
        self.tmp_path, self.env, self.processes = tmp_path, env, {}

    def start(self, name: str, *command: str) -> None:
        folder = self.tmp_path / name
        folder.mkdir(exist_ok=True)
        self.processes[name] = subprocess.Popen(
            command, cwd=folder, env=self.env, start_new_session=True,  # a process tree of its own
            stdout=open(folder / "log", "w"), stderr=subprocess.STDOUT)

    def worker(self, host: str) -> None:
        self.start(host, str(BIN / "celery"), "-A", "dagster_celery.app", "worker", "-Q", "dagster",
                   "-n", f"{host}@%h", "--concurrency", "2", "--loglevel", "INFO")

    def log(self, name: str) -> str:
        return (self.tmp_path / name / "log").read_text()

    def stop(self) -> None:
        for process in self.processes.values():
            _signal_tree(process, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _signal_tree(process, signal.SIGKILL)
                process.wait()


def _signal_tree(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


@pytest.fixture()
def scale_out(tmp_path, monkeypatch, postgres, redis):
    (tmp_path / "platform").mkdir()
    platform = make_platform(tmp_path / "platform", monkeypatch, symbols=20)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_URL": postgres.create_database("dagster"),
        "STOCK_ASSETS_BROKER": redis.url(0),
        "FMP_LIMITER_STATE": redis.url(1),
        "STOCK_ASSETS_CATALOG": postgres.create_database("lake"),
        "STOCK_ASSETS_DATA": str(tmp_path / "shared" / "lake"),
        "PYTHONPATH": str(PROJECT / "deploy"),  # the workers' Celery settings
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    hosts = ScaleOut(tmp_path, dict(os.environ))
    try:
        yield platform, hosts
    finally:
        hosts.stop()
        platform.sim.stop()


def _sync_runs(instance: dg.DagsterInstance, sync_id: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(tags={SYNC_TAG: sync_id})))


def _wait_for_the_sync(instance: dg.DagsterInstance, sync_id: str, hosts: ScaleOut, quiet_s: float = 15.0) -> None:
    """Until every run of the sync has ended and the sensor has asked for no more for `quiet_s`."""
    settled_at, seen = None, -1
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        runs = _sync_runs(instance, sync_id)
        if runs and all(r.is_finished for r in runs):
            if len(runs) != seen:
                settled_at, seen = time.monotonic(), len(runs)
            elif time.monotonic() - settled_at >= quiet_s:
                return
        else:
            settled_at, seen = None, -1
        time.sleep(1.0)
    raise AssertionError(f"the sync did not end: {[(r.job_name, r.status.value) for r in runs]}\n"
                         + hosts.log("daemon")[-3000:])


@pytest.mark.scenario  # a daemon, two workers and a full sync: about two minutes alone
@pytest.mark.timeout(1200)
def test_a_sync_on_the_scale_out_configuration_runs_on_both_workers_and_ends_true(scale_out):
    platform, hosts = scale_out
    # Dagster creates its tables on first use, but two first uses at once race in PostgreSQL
    # ("type run_tags already exists"): the deploy creates them once, before any process starts.
    migrated = subprocess.run([str(BIN / "dagster"), "instance", "migrate"], cwd=PROJECT, env=hosts.env,
                              capture_output=True, text=True, timeout=300)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    hosts.start("daemon", str(BIN / "dagster-daemon"), "run", "-w", str(PROJECT / "workspace.yaml"))
    for host in ("host-a", "host-b"):
        hosts.worker(host)

    sync_id = "scheduled-2026-12-04"  # as the schedule names it
    launched = subprocess.run(
        [str(BIN / "dagster"), "job", "launch", "-w", str(PROJECT / "workspace.yaml"), "-j", "universe",
         "--tags", json.dumps({SYNC_TAG: sync_id})],
        cwd=PROJECT, env=hosts.env, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]

    instance = dg.DagsterInstance.get()
    _wait_for_the_sync(instance, sync_id, hosts)
    runs = _sync_runs(instance, sync_id)
    assert {r.job_name for r in runs} >= {"universe", "corporate_actions", "session", "shards"}
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.job_name, r.status) for r in runs]

    results = celery.Celery(broker=hosts.env["STOCK_ASSETS_BROKER"], backend=hosts.env["STOCK_ASSETS_BROKER"])
    workers = {results.AsyncResult(r.tags[CELERY_TASK_TAG]).worker for r in runs}
    assert {w.split("@")[0] for w in workers} == {"host-a", "host-b"}, workers  # runs landed on both hosts

    assert_warehouse_matches_truth(platform)
    for table in TABLES.values():
        key = ", ".join(table.key)
        (rows, keys), = platform.sql(f"SELECT count(*), count(DISTINCT ({key})) FROM {table.name}")
        assert rows == keys, f"{table.name}: {rows - keys} keys stored twice"
