"""The scale-out configuration (`deploy/`), run for real: Dagster's storage in PostgreSQL, runs on
Celery workers through Redis, one key's limit in Redis, the warehouse's catalog in PostgreSQL.

The tests start the servers themselves (Debian's PostgreSQL and Redis, temporary folders, free
ports), Dagster's daemon as the webserver's host would, and two Celery workers as two hosts would
(`scale_out.py`): a whole sync on both; a host killed mid-sync, the other finishing and
`backfill-failed` healing the rest.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time

import celery
import dagster as dg
import pytest
from dagster_celery.launcher import WorkerStatus

from fmp_simulator import busiest_minute
from stock_assets_tests.conftest import (after_close, assert_no_key_stored_twice,
                                       assert_warehouse_matches_truth, make_platform)
from stock_assets_tests.scale_out import BIN, CELERY_TASK_TAG, ScaleOut, scale_out_environment, sync_runs


@pytest.fixture()
def scale_out(request, tmp_path, monkeypatch, postgres, redis):
    """The platform (a simulator of 20 symbols, or `request.param`'s options) on the scale-out configuration."""
    (tmp_path / "platform").mkdir()
    platform = make_platform(tmp_path / "platform", monkeypatch, **getattr(request, "param", {"symbols": 20}))
    for name, value in scale_out_environment(tmp_path, postgres, redis).items():
        monkeypatch.setenv(name, value)
    hosts = ScaleOut(tmp_path, dict(os.environ))
    try:
        yield platform, hosts
    finally:
        hosts.stop()
        platform.sim.stop()


def _celery(hosts: ScaleOut) -> celery.Celery:
    return celery.Celery(broker=hosts.env["STOCK_ASSETS_BROKER"], backend=hosts.env["STOCK_ASSETS_BROKER"])


def _worker_of(results: celery.Celery, run: dg.DagsterRun) -> str | None:
    """The Celery worker that started the run (`host@machine`), from the task's state."""
    if CELERY_TASK_TAG not in run.tags:
        return None
    task = results.AsyncResult(run.tags[CELERY_TASK_TAG])
    return task.worker or (task.info.get("hostname") if isinstance(task.info, dict) else None)


def test_the_launcher_reports_a_run_whose_celery_worker_is_gone_as_failed_and_a_headless_run_as_running(
        redis, monkeypatch):
    from stock_assets.runs import celery_launcher

    monkeypatch.setattr(celery_launcher, "PING_TIMEOUT_S", 1.0)
    launcher = celery_launcher.CeleryRunLauncher(default_queue="dagster", broker=redis.url(2), backend=redis.url(2))
    headless = dg.DagsterRun(job_name="shards", run_id="a-headless-run", tags={"stock-assets/pid": "1"})
    assert launcher.check_run_worker_health(headless).status == WorkerStatus.RUNNING

    # A task a worker started, then nothing more: its worker was killed with its host.
    launcher.celery.backend.store_result("task-of-a-killed-host", {"pid": 4242, "hostname": "host-b@gone"}, "STARTED")
    orphan = dg.DagsterRun(job_name="shards", run_id="an-orphan", tags={CELERY_TASK_TAG: "task-of-a-killed-host"})
    health = launcher.check_run_worker_health(orphan)
    assert health.status == WorkerStatus.FAILED and "host-b@gone" in health.msg, health
    # dagster-celery's own check still answers what the task says.
    launcher.celery.backend.store_result("task-of-a-killed-host", 0, "SUCCESS")
    assert launcher.check_run_worker_health(orphan).status == WorkerStatus.SUCCESS


@pytest.mark.scenario  # a daemon, two workers and a full sync: about two minutes alone
@pytest.mark.timeout(1200)
def test_a_sync_on_the_scale_out_configuration_runs_on_both_workers_and_ends_true(scale_out):
    platform, hosts = scale_out
    sync_id = "scheduled-2026-12-04"  # as the schedule names it
    hosts.start_sync(sync_id)

    instance = dg.DagsterInstance.get()
    runs = hosts.wait_for_the_sync(instance, sync_id)
    assert {r.job_name for r in runs} >= {"universe", "corporate_actions", "session", "shards"}
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.job_name, r.status) for r in runs]

    results = _celery(hosts)
    workers = {_worker_of(results, r) for r in runs}
    assert {w.split("@")[0] for w in workers} == {"host-a", "host-b"}, workers  # runs landed on both hosts

    assert_warehouse_matches_truth(platform)
    assert_no_key_stored_twice(platform)


LIMIT_PER_MIN = 1_500  # one key's limit, shared by both hosts through Redis


@pytest.mark.scenario  # a first sync of 1,500 symbols on two hosts, one killed, then a backfill: ~6 minutes
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("scale_out", [{"symbols": 1_500, "rate_limit_per_min": LIMIT_PER_MIN,
                                         "now": after_close(dt.date(2026, 12, 4))}], indirect=True)
def test_a_host_killed_mid_sync_the_other_finishes_and_backfill_failed_heals_the_rest(scale_out):
    platform, hosts = scale_out
    sync_id = "scheduled-2026-12-04"
    hosts.start_sync(sync_id)
    instance = dg.DagsterInstance.get()
    results = _celery(hosts)

    # Host B is killed (its whole process tree, as a power cut would) while it runs a shard range.
    deadline = time.monotonic() + 900
    while not any(r.job_name == "shards" and r.status == dg.DagsterRunStatus.STARTED
                  and (_worker_of(results, r) or "").startswith("host-b@") for r in sync_runs(instance, sync_id)):
        assert time.monotonic() < deadline, hosts.log("daemon")[-3000:]
        time.sleep(0.5)
    calls_then, deadline = len(platform.sim.requests()), time.monotonic() + 60
    while len(platform.sim.requests()) < calls_then + 100 and time.monotonic() < deadline:
        time.sleep(0.2)  # until it has fetched part of its range
    hosts.kill("host-b")

    # Host A finishes its runs; run monitoring fails host B's (its worker answers no ping).
    runs = hosts.wait_for_the_sync(instance, sync_id)
    lost = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
    assert lost and all(_worker_of(results, r).startswith("host-b@") for r in lost), \
        [(r.job_name, r.status.value, _worker_of(results, r)) for r in runs]
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs if r not in lost)
    failure = next(iter(instance.all_logs(lost[0].run_id, of_type=dg.DagsterEventType.RUN_FAILURE)))
    assert "does not answer" in failure.dagster_event.message
    with pytest.raises(AssertionError):  # what host B was fetching is missing
        assert_warehouse_matches_truth(platform)

    # On any host with the environment: the failed and missing partitions, fetched again.
    healed = subprocess.run([str(BIN / "stock-assets"), "backfill-failed"], cwd=hosts.folder, env=hosts.env,
                            capture_output=True, text=True, timeout=900)
    assert healed.returncode == 0, healed.stdout[-3000:] + healed.stderr[-3000:]
    assert_warehouse_matches_truth(platform)
    assert_no_key_stored_twice(platform)

    # The two hosts and the backfill, together, kept to the key's one limit (the server's count).
    log = platform.sim.requests()
    limited = sum(1 for e in log if e["status"] == 429)
    assert busiest_minute(log) <= LIMIT_PER_MIN
    assert limited <= 0.005 * len(log), f"{limited} of {len(log)} calls answered 429"
