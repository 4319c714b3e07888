"""A sync killed mid-run: the stuck run is reaped, and backfill-failed completes the grid.

Real parts only: `stock-assets sync` and `stock-assets backfill-failed` run as
subprocesses against the simulator over HTTP, the DuckDB file and the
persistent Dagster instance that the test then reads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster import AssetPartitionStatus, DagsterRunStatus

from stock_assets.defs.partitions import SHARD_KEYS, latest_session_day, symbol_shards
from stock_assets_tests.conftest import configured_trading_days
from stock_assets.runs.instance_health import reap_dead_runs
from stock_assets.runs.plan import failed_and_missing, shards_of_run
from stock_assets.tags import HOST_TAG, PID_TAG

CLI = Path(sys.executable).with_name("stock-assets")
SHARD_ASSETS = ("company_profiles", "price_history", "dividend_history")
DAILY_ASSETS = ("daily_prices", "dividends")
IN_PROGRESS = (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED)


def command(*args: str) -> list[str]:
    if CLI.exists():
        return [str(CLI), *args]
    return [sys.executable, "-m", "stock_assets.cli", *args]


def cli(tmp_path: Path, *args: str, timeout: float = 480) -> subprocess.CompletedProcess:
    # The platform fixture put its configuration into os.environ (monkeypatch).
    return subprocess.run(command(*args), env=dict(os.environ), cwd=tmp_path, capture_output=True,
                          text=True, timeout=timeout)


def shard_status(instance: dg.DagsterInstance, asset: str) -> dict[str, AssetPartitionStatus | None]:
    return instance.get_status_by_partition(dg.AssetKey(asset), SHARD_KEYS, symbol_shards)


def kill_sync_mid_shard(platform, tmp_path: Path) -> list[dg.DagsterRun]:
    """Start `stock-assets sync`, SIGKILL its process group once a shard run is under way.

    Returns the shard runs left in progress.
    """
    # Create the instance's storage first: two processes creating a fresh SQLite
    # storage at once can both stamp its schema version (alembic "more than one head").
    instance = platform.instance()
    platform.sim.faults.latency_s = 1.0  # every call takes a second: a shard run lasts seconds
    log = open(tmp_path / "sync.log", "w")
    proc = subprocess.Popen(command("sync"), env=dict(os.environ), cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while True:
            runs = instance.get_runs(dg.RunsFilter(statuses=[DagsterRunStatus.STARTED]))
            if any(shards_of_run(r.tags) for r in runs):
                time.sleep(0.3)  # into the step, mid-fetch
                break
            assert proc.poll() is None, (tmp_path / "sync.log").read_text()
            assert time.monotonic() < deadline, "no shard run started within 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sync and both of its worker processes
        proc.wait(timeout=30)
        log.close()
    platform.sim.faults.latency_s = 0.0
    time.sleep(0.5)
    stuck = platform.instance().get_runs(dg.RunsFilter(statuses=list(IN_PROGRESS)))
    return [r for r in stuck if shards_of_run(r.tags)]


@pytest.mark.scenario  # a kill and its recovery: ~2 minutes, run by CI after the default run
@pytest.mark.timeout(600)  # a killed sync, then a backfill of the session and all 39 shards
def test_killed_run_is_reaped_and_backfill_failed_completes_every_partition(platform, tmp_path):
    stuck = kill_sync_mid_shard(platform, tmp_path)
    assert stuck, "the kill left no shard run in progress"
    day = latest_session_day().isoformat()  # the day the sync planned

    # As Dagster leaves it: the run STARTED, its partitions IN_PROGRESS, however long we wait.
    instance = platform.instance()
    time.sleep(1.0)
    for run in stuck:
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
        for key in run.asset_selection:
            status = shard_status(instance, key.to_user_string())
            assert {status[shard] for shard in shards_of_run(run.tags)} == {AssetPartitionStatus.IN_PROGRESS}

    # Recovery notices the process is gone: run FAILED, partitions FAILED.
    reaped = reap_dead_runs(instance)
    assert {r.run_id for r in stuck} <= set(reaped)
    assert reap_dead_runs(instance) == []  # nothing left to reap
    assert not instance.get_runs(dg.RunsFilter(statuses=list(IN_PROGRESS)))
    for run in stuck:
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
        for key in run.asset_selection:
            status = shard_status(instance, key.to_user_string())
            assert {status[shard] for shard in shards_of_run(run.tags)} == {AssetPartitionStatus.FAILED}
    todo = failed_and_missing(instance, platform.config)
    assert {shard for r in stuck for shard in shards_of_run(r.tags)} <= {shard for p in todo for shard in p.shards}

    # --dry-run says what it would launch and launches nothing.
    runs_before = len(instance.get_runs())
    platform.sim.clear_requests()
    dry = cli(tmp_path, "backfill-failed", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"Launching {len(todo)} run(s)" in dry.stdout, dry.stdout
    for planned in todo:
        assert planned.describe() in dry.stdout
    assert len(platform.instance().get_runs()) == runs_before
    assert platform.sim.requests() == []

    # The real thing: every partition the sync planned ends MATERIALIZED.
    done = cli(tmp_path, "backfill-failed")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(todo)} of {len(todo)} runs succeeded" in done.stdout, done.stdout
    instance = platform.instance()
    present = {shard for (shard,) in platform.sql("SELECT DISTINCT shard FROM market.symbols")}
    for asset in SHARD_ASSETS:
        status = shard_status(instance, asset)
        assert all(status[k] == AssetPartitionStatus.MATERIALIZED for k in present), (asset, status)
    for asset in DAILY_ASSETS:
        status = instance.get_status_by_partition(dg.AssetKey(asset), [day], configured_trading_days())
        assert status[day] == AssetPartitionStatus.MATERIALIZED, asset
    assert failed_and_missing(instance, platform.config) == []
    # The reaped shards' symbols are all in the warehouse now.
    (profiles,), = platform.sql("SELECT count(*) FROM market.company_profiles")
    (symbols,), = platform.sql("SELECT count(*) FROM market.symbols")
    assert profiles == symbols > 0

    again = cli(tmp_path, "backfill-failed", "--dry-run")
    assert "Nothing failed or missing" in again.stdout, again.stdout


def test_reap_leaves_live_and_foreign_runs_alone(platform):
    """An in-progress run whose process is alive (or on another host) is not touched."""
    instance = platform.instance()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = _started_run(instance, {PID_TAG: str(sleeper.pid), HOST_TAG: _host()})
        foreign = _started_run(instance, {PID_TAG: "999999", HOST_TAG: "another-host"})
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        gone = _started_run(instance, {PID_TAG: str(dead.pid), HOST_TAG: _host()})
        # A killed process whose parent has not collected it yet (a zombie) is gone too.
        zombie = subprocess.Popen([sys.executable, "-c", "pass"])
        while _state(zombie.pid) != "Z":
            time.sleep(0.02)
        undead = _started_run(instance, {PID_TAG: str(zombie.pid), HOST_TAG: _host()})
        assert sorted(reap_dead_runs(instance)) == sorted([gone.run_id, undead.run_id])
        zombie.wait()
        assert instance.get_run_by_id(live.run_id).status == DagsterRunStatus.NOT_STARTED
        assert instance.get_run_by_id(foreign.run_id).status == DagsterRunStatus.NOT_STARTED
        assert instance.get_run_by_id(gone.run_id).status == DagsterRunStatus.FAILURE
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_run_that_ends_while_the_reaper_looks_keeps_its_outcome(platform, monkeypatch):
    """A run in progress when the reaper lists runs, ended (and its process gone) by the time the
    reaper checks its pid, is left as it ended: a successful run's process exits right after it
    records its success, and the daemon's housekeeping sensor once turned such a run FAILED."""
    from stock_assets.runs import instance_health

    instance = platform.instance()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ended = _started_run(instance, {PID_TAG: str(dead.pid), HOST_TAG: _host()})
    alive = instance_health.alive

    def ends_first(pid: int) -> bool:  # the run ends between the reaper's look and its pid check
        instance.report_run_canceled(instance.get_run_by_id(ended.run_id))
        return alive(pid)

    monkeypatch.setattr(instance_health, "alive", ends_first)
    assert reap_dead_runs(instance) == []
    assert instance.get_run_by_id(ended.run_id).status == DagsterRunStatus.CANCELED


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _host() -> str:
    import socket

    return socket.gethostname()


def _started_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> dg.DagsterRun:
    """A run as an in-process executor leaves it in the instance, tagged with its process."""
    run = instance.create_run_for_job(_noop_job, tags=tags)
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.NOT_STARTED
    return run


@dg.op
def _noop() -> None:
    pass


@dg.job
def _noop_job() -> None:
    _noop()


def test_the_latest_session_is_due_once_there_is_a_universe(platform):
    """A sync stopped after its universe run but before its session run began leaves that day to do."""
    from stock_assets.runs.plan import PlannedRun
    from stock_assets.runs.runner import execute

    instance = platform.instance()
    assert failed_and_missing(instance, platform.config) == [PlannedRun(("symbols",))]  # nothing else before a universe
    assert execute(instance, platform.config, PlannedRun(("symbols",)), {}).success
    day = latest_session_day().isoformat()
    todo = {p.partition_key: p.assets for p in failed_and_missing(instance, platform.config)}
    assert todo[day] == ("splits", "daily_prices", "dividends")
    assert [k for k in todo if k is not None and k not in SHARD_KEYS] == [day]  # and no older day
