"""An interrupted sync ends cleanly and recovers; readers, leaked slots and a second sync don't break it.

Real parts only: `stock-assets sync` and `backfill-failed` run as commands
against the simulator over HTTP, the DuckDB file and the persistent Dagster
instance. The simulator's latency (a second a call while the sync is to be
interrupted) dominates the machine's own speed, so a sync is surely mid-shard
when the signal arrives.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
from dagster import DagsterRunStatus

from stock_assets.defs.partitions import shard_of
from stock_assets.runs.instance_health import alive, descendants
from stock_assets.runs.plan import failed_and_missing, shards_of_run
from stock_assets.tags import HOST_TAG, PID_TAG, SYNC_TAG
from stock_assets_tests.conftest import assert_warehouse_matches_truth, make_platform
from stock_assets_tests.readers import LakeReader

CLI = Path(sys.executable).with_name("stock-assets")
PER_SYMBOL_PATHS = ("profile", "historical-price-eod/full", "dividends")
# How long every process of an interrupted sync may take to be gone (the bound):
# a deadline to wait for, far above the ~1 s it takes.
GONE_WITHIN_S = 20


def command(*args: str) -> list[str]:
    return [str(CLI), *args] if CLI.exists() else [sys.executable, "-m", "stock_assets.cli", *args]


def cli(tmp_path: Path, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), env=env or dict(os.environ), cwd=tmp_path, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture()
def small(tmp_path, monkeypatch):
    platform = make_platform(tmp_path, monkeypatch, symbols=8)  # a first sync of a dozen runs
    yield platform
    platform.sim.stop()


def start_sync(platform, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "sync.log"
    proc = subprocess.Popen(command("sync"), env=dict(os.environ), cwd=tmp_path, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def wait_until_mid_shard(platform, proc: subprocess.Popen, log: Path) -> None:
    instance = platform.instance()
    deadline = time.monotonic() + 120
    while True:
        runs = instance.get_runs(dg.RunsFilter(statuses=[DagsterRunStatus.STARTED]))
        if any(shards_of_run(r.tags) for r in runs):
            time.sleep(1.5)  # into the step: a call or two answered, more in flight
            return
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "no shard run started within 120 s"
        time.sleep(0.05)


def wait_gone(pids: set[int]) -> set[int]:
    deadline = time.monotonic() + GONE_WITHIN_S
    while time.monotonic() < deadline:
        left = {pid for pid in pids if alive(pid)}
        if not left:
            return set()
        time.sleep(0.1)
    return {pid for pid in pids if alive(pid)}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("how", [
    # Ctrl-C in the default run; a kill and a SIGTERM among the long scenarios (make test-scenarios).
    pytest.param("SIGKILL to the main process alone", marks=pytest.mark.scenario),
    "SIGINT to the process group",
    pytest.param("SIGTERM to the main process", marks=pytest.mark.scenario)])
def test_interrupted_sync_leaves_no_process_and_backfill_completes_it(small, tmp_path, how):
    platform = small
    platform.instance()  # the storage exists before two processes could race to create it
    platform.sim.faults.latency_s = 1.0
    proc, log = start_sync(platform, tmp_path)
    try:
        wait_until_mid_shard(platform, proc, log)
        workers = descendants(proc.pid)
        assert workers, "the sync runs its shards on worker processes"
        if how.startswith("SIGKILL"):
            os.kill(proc.pid, signal.SIGKILL)
        elif how.startswith("SIGINT"):
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C at a terminal does
        else:
            os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=GONE_WITHIN_S)
        assert wait_gone(workers | {proc.pid}) == set(), "processes of the sync outlived it"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log.read_text()
    platform.sim.faults.latency_s = 0.0

    instance = platform.instance()
    sync_id = re.search(r"Sync (sync-\S+) for", output).group(1)
    runs = instance.get_runs(dg.RunsFilter(tags={SYNC_TAG: sync_id}))
    interrupted = [r for r in runs if r.status != DagsterRunStatus.SUCCESS]
    assert interrupted, "the signal arrived mid-shard: some run was interrupted"
    if how.startswith("SIGKILL"):
        assert code == -signal.SIGKILL
        # The workers failed their own runs when their parent died: none is left in progress.
        assert all(r.status == DagsterRunStatus.FAILURE for r in interrupted), [r.status for r in interrupted]
    else:
        assert code == (130 if how.startswith("SIGINT") else 143), output
        assert all(r.status == DagsterRunStatus.FAILURE for r in interrupted), [r.status for r in interrupted]
        assert "interrupted" in output and "stock-assets backfill-failed" in output, output
        assert "Traceback" not in output, output

    done = cli(tmp_path, "backfill-failed")
    assert done.returncode == 0, done.stdout + done.stderr
    instance = platform.instance()
    assert failed_and_missing(instance, platform.config) == []
    assert_warehouse_matches_truth(platform)

    # Nothing fetched twice but what the interruption cut off: the symbols of interrupted shards.
    redone = {shard for r in interrupted for shard in shards_of_run(r.tags)}
    per_symbol = Counter((e["path"], e["params"].get("symbol")) for e in platform.sim.requests()
                         if e["path"] in PER_SYMBOL_PATHS and e["status"] == 200)
    twice = {symbol for (path, symbol), n in per_symbol.items() if n > 1}
    assert max(per_symbol.values()) <= 2
    assert {shard_of(s) for s in twice} <= redone, (twice, redone)


# -- pool slots ---------------------------------------------------------------------------


@dg.op(pool="fmp")
def _fetch_something() -> None:
    pass


@dg.job
def _fmp_job() -> None:
    _fetch_something()


def _run_in_progress(instance: dg.DagsterInstance, pid: int) -> dg.DagsterRun:
    """A run of the `fmp` pool, STARTED by process `pid`, as an in-process executor leaves it."""
    run = instance.create_run_for_job(_fmp_job, tags={PID_TAG: str(pid), HOST_TAG: _host()})
    started = dg.DagsterEvent(event_type_value=dg.DagsterEventType.RUN_START.value, job_name=_fmp_job.name)
    instance.handle_run_event(run.run_id, started)
    return instance.get_run_by_id(run.run_id)


def _host() -> str:
    import socket

    return socket.gethostname()


def test_slots_of_killed_and_finished_runs_are_freed_before_a_sync(small, tmp_path):
    instance = small.instance()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = _run_in_progress(instance, dead.pid)  # its process is gone, it still says STARTED
    finished = _run_in_progress(instance, os.getpid())
    instance.report_run_failed(finished, message="finished long ago")
    storage = instance.event_log_storage
    for run in (killed, finished):
        storage.claim_concurrency_slot("fmp", run.run_id, "_fetch_something")
    assert storage.get_concurrency_run_ids() == {killed.run_id, finished.run_id}

    done = cli(tmp_path, "sync")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Marked 1 run(s) of killed processes as failed" in done.stdout
    assert "Freed the concurrency slots still held by" in done.stdout
    assert storage.get_concurrency_run_ids() == set()
    assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE


def test_a_pool_full_of_live_runs_is_named_instead_of_waited_on(small, tmp_path):
    instance = small.instance()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        limit = instance.global_op_concurrency_default_limit  # the project's dagster.yaml: 3
        holders = [_run_in_progress(instance, sleeper.pid) for _ in range(limit)]
        done = cli(tmp_path, "sync", timeout=120)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "`fmp` pool" in lines[0] and all(r.run_id[:8] in lines[0] for r in holders)
    assert small.sim.requests() == []  # nothing was started
    assert len(instance.get_runs()) == limit


# -- readers -------------------------------------------------------------------------------

def test_a_reader_of_the_lake_never_holds_the_sync_back_and_every_answer_is_a_committed_snapshot(small, tmp_path):
    platform = small
    first = cli(tmp_path, "sync")
    assert first.returncode == 0, first.stdout + first.stderr
    reader = LakeReader(platform.warehouse())  # another program
    try:
        platform.sim.faults.latency_s = 0.05
        second = subprocess.Popen(command("sync", "--date", _previous_session()), env=dict(os.environ),
                                  cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while second.poll() is None:  # the reader keeps asking while the sync writes
            reader.ask()
            time.sleep(0.1)
        output = second.stdout.read()
    finally:
        reader.stop()
    assert second.returncode == 0, output
    assert "Waiting" not in output  # nobody waited for anybody
    assert len(reader.snapshots_seen()) > 3, reader.answers  # it saw the sync's commits land, one by one
    with platform.reader() as conn:
        reader.assert_every_answer_was_a_committed_snapshot(conn)


def _previous_session() -> str:
    from stock_assets import trading
    from stock_assets.defs.partitions import latest_session_day

    return trading.calendar().previous_session(latest_session_day().isoformat()).date().isoformat()


# -- bad input ---------------------------------------------------------------------------------


BAD_INPUT = [
    (["sync", "--date", "2026-13-45"], {}, "is not a date"),
    (["sync", "--date", "2025-06-07"], {}, "is a Saturday"),
    (["sync", "--date", "2099-01-05"], {}, "no closed session yet"),
    (["sync", "--date", "2024-12-31"], {}, "before the first trading-day partition"),
    (["sync"], {"FMP_PLAN": "platinum"}, "FMP_PLAN='platinum' is not a plan"),
    (["sync"], {"FMP_RATE_LIMIT_PER_MIN": "fast"}, "FMP_RATE_LIMIT_PER_MIN"),
    (["sync"], {"FMP_BASE_URL": "financialmodelingprep.com"}, "not an http(s) URL"),
    (["sync"], {"STOCK_ASSETS_START": "last year"}, "STOCK_ASSETS_START"),
    (["sync"], {"DAGSTER_HOME": "{file}"}, "is a file, not a folder"),
    (["sync"], {"STOCK_ASSETS_DB": "{folder}"}, "is a folder"),
    (["sync"], {"STOCK_ASSETS_CATALOG": "postgresql://stocks:hunter2@db.example/stocks"}, "PGPASSWORD"),
    (["sql", "SELECT 1"], {"STOCK_ASSETS_CATALOG": "mysql://db.example/stocks"}, "not a PostgreSQL URL"),
    (["sync"], {"STOCK_ASSETS_DATA": "{file}"}, "is a file, not a folder"),
    (["backfill-failed", "--asset", "price_histroy"], {}, "price_history"),
    (["report", "--history", "many"], {}, "invalid int value"),
]


@pytest.mark.parametrize("args, env, says", BAD_INPUT, ids=[" ".join(a) + " " + " ".join(e) for a, e, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(small, tmp_path, args, env, says):
    stray = tmp_path / "a-file"
    stray.write_text("not a folder")
    env = {k: v.format(file=stray, folder=tmp_path) for k, v in env.items()}
    instance = small.instance()
    runs_before = len(instance.get_runs())
    done = cli(tmp_path, *args, env={**os.environ, **env}, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert says in lines[-1], done.stderr
    assert "hunter2" not in done.stderr  # a password given where it does not belong is never echoed
    assert len(lines) == 1 or lines[0].startswith("usage:"), done.stderr  # argparse adds its usage line
    assert done.stdout == ""
    assert len(instance.get_runs()) == runs_before
    assert not small.db.exists()
    assert small.sim.requests() == []


def test_an_unknown_asset_lists_the_assets(small, tmp_path):
    done = cli(tmp_path, "backfill-failed", "--asset", "price_histroy")
    assert done.returncode == 2
    for name in ("symbols", "splits", "daily_prices", "price_history", "dividends", "dividend_history",
                 "company_profiles"):
        assert name in done.stderr


# -- two commands at once ------------------------------------------------------------------------


def test_a_second_sync_refuses_at_once_while_the_first_runs(small, tmp_path):
    platform = small
    platform.sim.faults.latency_s = 0.1  # so the first lasts well past the second's start
    # A fresh DAGSTER_HOME (no storage yet): the two must not race on setting it up.
    syncs = [subprocess.Popen(command("sync"), env=dict(os.environ), cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outputs = [proc.communicate(timeout=300) for proc in syncs]
    finally:
        for proc in syncs:
            proc.kill()
    codes = [proc.returncode for proc in syncs]
    assert sorted(codes) == [0, 1], outputs
    ran, refused = (0, 1) if codes[0] == 0 else (1, 0)
    stderr = outputs[refused][1]
    assert "is running on this Dagster instance" in stderr and f"pid {syncs[ran].pid}" in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert outputs[refused][0] == ""  # nothing started: not even the simulator switch spoke
    assert "alembic" not in outputs[ran][1]
    # One sync's worth of universe runs, and no duplicate rows.
    universe_runs = [r for r in platform.instance().get_runs()
                     if "dagster/partition" not in r.tags and not shards_of_run(r.tags)]
    assert len(universe_runs) == 1
    assert platform.sql("SELECT count(*) - count(DISTINCT (symbol, date)) FROM market.prices") == [(0,)]
