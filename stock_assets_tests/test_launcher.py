"""The daemon's runs execute on a few long-lived worker processes (`stock_assets.launcher`).

One `dagster dev` (webserver + daemon) on the project's `dagster.yaml`: the
`universe` job launched the way the schedule does, the sensor and the run
queue doing the rest. Then, with the simulator refusing every call (its
per-minute limit set to one), two runs that hang on retries: one terminated
from the API (the UI's button), one whose worker is killed.
"""

from __future__ import annotations

import os
import signal
import time

import dagster as dg
import httpx
import pytest
from dagster import DagsterRunStatus

from stock_assets.instance_health import alive, descendants
from stock_assets.tags import PID_TAG, SYNC_TAG
from stock_assets_tests.test_ui_recovery import wait_for
from stock_assets_tests.ui_support import dagster_dev

pytestmark = pytest.mark.slow

TERMINATE = """
mutation($runId: String!) {
  terminateRun(runId: $runId) { __typename ... on PythonError { message } }
}"""


def test_daemon_runs_share_worker_processes_that_end_cancel_and_die_cleanly(platform, tmp_path):
    with dagster_dev(tmp_path) as ui:
        daemon_pid = next(pid for pid in descendants(ui.process.pid) if "dagster._daemon" in _cmdline(pid))

        # A daily sync through the schedule's job: a dozen runs on a few workers of the daemon.
        ui.launch_job("universe", {SYNC_TAG: "launcher-test"})

        def settled():
            runs = platform.instance().get_runs(dg.RunsFilter(tags={SYNC_TAG: "launcher-test"}))
            shards = [r for r in runs if r.job_name == "shards"]
            return runs if shards and all(r.is_finished for r in runs) else None

        runs = wait_for("the daemon's sync did not finish", settled, 600, ui.log_tail)
        time.sleep(8)  # the sensor's next tick would add any run not yet requested
        runs = wait_for("the daemon's sync did not finish", settled, 300, ui.log_tail)
        assert [r.run_id for r in runs if r.status != DagsterRunStatus.SUCCESS] == []
        pids = {int(r.tags[PID_TAG]) for r in runs}
        assert len(runs) >= 5
        # The default launcher starts a process per run; these share one per slot of the queue (3),
        # and one more now and then, where a run was handed over while its worker was finishing.
        assert len(pids) < len(runs), f"{len(runs)} runs on {len(pids)} processes"
        assert all(_parent(pid) == daemon_pid for pid in pids if alive(pid)), "workers are the daemon's children"

        # Every call now refused: a run hangs on retries until it is stopped.
        httpx.post(f"{platform.sim.root_url}/_sim/config", json={"rate_limit_per_min": 1, "reset_limits": True})

        canceled = ui.launch_job("universe")
        started = wait_for("the run to cancel did not start", lambda: _started(platform, canceled), 120,
                           ui.log_tail)
        assert ui.graphql(TERMINATE, {"runId": canceled})["data"]["terminateRun"]["__typename"] == \
            "TerminateRunSuccess"
        wait_for("the terminated run did not end CANCELED",
                 lambda: platform.instance().get_run_by_id(canceled).status == DagsterRunStatus.CANCELED, 60,
                 ui.log_tail)

        killed = ui.launch_job("universe")
        started = wait_for("the run to kill did not start", lambda: _started(platform, killed), 120, ui.log_tail)
        os.kill(int(started.tags[PID_TAG]), signal.SIGKILL)
        run = wait_for("the run of the killed worker did not end FAILED",
                       lambda: _finished(platform, killed), 60, ui.log_tail)
        assert run.status == DagsterRunStatus.FAILURE

        # The key works again: the next run (on the worker that outlived its canceled run, or a new one)
        # succeeds.
        httpx.post(f"{platform.sim.root_url}/_sim/config", json={"rate_limit_per_min": 60_000, "reset_limits": True})
        again = ui.launch_job("universe")
        run = wait_for("the run after the kill did not end", lambda: _finished(platform, again), 120, ui.log_tail)
        assert run.status == DagsterRunStatus.SUCCESS
        workers = {int(r.tags[PID_TAG]) for r in platform.instance().get_runs() if PID_TAG in r.tags}
    # dagster dev stopped: none of its workers outlives it.
    wait_for("a worker outlived dagster dev", lambda: not any(alive(pid) for pid in workers), 30)


def _started(platform, run_id: str):
    run = platform.instance().get_run_by_id(run_id)
    return run if run.status == DagsterRunStatus.STARTED and PID_TAG in run.tags else None


def _finished(platform, run_id: str):
    run = platform.instance().get_run_by_id(run_id)
    return run if run.is_finished else None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])
