"""The daemon's runs on Dagster's default launcher: a sync, a terminate, a killed run, a killed daemon.

One `dagster dev` (webserver + daemon) on the project's `dagster.yaml`: the
`universe` job launched the way the schedule does, the sensor and the run
queue doing the rest. Then, with the simulator refusing every call (its
per-minute limit set to one), runs that hang on retries: one terminated from
the API (the UI's button), one whose process is killed (the code server fails
it), and one left STARTED by a daemon killed with its whole process group,
which the project's reaper (`housekeeping`, the commands) fails by the pid
Dagster recorded when it started the run.
"""

from __future__ import annotations

import os
import signal
import time

import dagster as dg
import httpx
import pytest
from dagster import DagsterRunStatus

from stock_assets.runs.instance_health import alive, reap_dead_runs
from stock_assets.tags import SYNC_TAG
from stock_assets_tests.test_ui_recovery import wait_for
from stock_assets_tests.ui_support import dagster_dev

# A sync, a terminate and two kills under `dagster dev`: about two minutes alone, run by CI after the default run.
pytestmark = [pytest.mark.slow, pytest.mark.scenario]

TERMINATE = """
mutation($runId: String!) {
  terminateRun(runId: $runId) { __typename ... on PythonError { message } }
}"""
GRPC_INFO_TAG = ".dagster/grpc_info"  # the default launcher's mark: the code server that started the run


def test_daemon_runs_on_the_default_launcher_end_cancel_and_die_cleanly(platform, tmp_path):
    with dagster_dev(tmp_path) as ui:
        # A daily sync through the schedule's job: a handful of runs, each a process of the code server.
        ui.launch_job("universe", {SYNC_TAG: "daemon-test"})

        def settled():
            runs = platform.instance().get_runs(dg.RunsFilter(tags={SYNC_TAG: "daemon-test"}))
            shards = [r for r in runs if r.job_name == "shards"]
            return runs if shards and all(r.is_finished for r in runs) else None

        wait_for("the daemon's sync did not finish", settled, 600, ui.log_tail)
        time.sleep(8)  # the sensor's next tick (after the splits run) would add any run not yet requested
        runs = wait_for("the daemon's sync did not finish", settled, 300, ui.log_tail)
        assert [r.run_id for r in runs if r.status != DagsterRunStatus.SUCCESS] == []
        assert len(runs) >= 4 and all(GRPC_INFO_TAG in r.tags for r in runs)
        pids = {_run_pid(platform, r.run_id) for r in runs}
        assert None not in pids and len(pids) == len(runs), "a process per run, as Dagster starts them"

        # Every call now refused: a run hangs on retries until it is stopped.
        httpx.post(f"{platform.sim.root_url}/_sim/config", json={"rate_limit_per_min": 1, "reset_limits": True})

        canceled = ui.launch_job("universe")
        wait_for("the run to cancel did not start", lambda: _started(platform, canceled), 120, ui.log_tail)
        assert ui.graphql(TERMINATE, {"runId": canceled})["data"]["terminateRun"]["__typename"] == \
            "TerminateRunSuccess"
        wait_for("the terminated run did not end CANCELED",
                 lambda: platform.instance().get_run_by_id(canceled).status == DagsterRunStatus.CANCELED, 60,
                 ui.log_tail)

        killed = ui.launch_job("universe")
        pid = wait_for("the run to kill did not start", lambda: _started(platform, killed), 120, ui.log_tail)
        os.kill(pid, signal.SIGKILL)
        run = wait_for("the run of the killed process did not end FAILED",
                       lambda: _finished(platform, killed), 60, ui.log_tail)
        assert run.status == DagsterRunStatus.FAILURE

        orphan = ui.launch_job("universe")
        orphan_pid = wait_for("the last run did not start", lambda: _started(platform, orphan), 120, ui.log_tail)
        os.killpg(os.getpgid(ui.process.pid), signal.SIGKILL)  # the daemon, its code server and the run
        wait_for("dagster dev's processes outlived a kill", lambda: not alive(orphan_pid), 30)

    # Nothing was left to fail it: the reaper finds its process gone by the pid Dagster recorded.
    instance = platform.instance()
    assert instance.get_run_by_id(orphan).status == DagsterRunStatus.STARTED
    assert reap_dead_runs(instance) == [orphan]
    assert instance.get_run_by_id(orphan).status == DagsterRunStatus.FAILURE
    assert not any(alive(p) for p in pids | {pid, orphan_pid})


def _run_pid(platform, run_id: str) -> int | None:
    """The pid Dagster records as it starts a run's process."""
    for entry in platform.instance().all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        pid = entry.dagster_event.event_specific_data.metadata.get("pid")
        if pid is not None:
            return int(pid.value)
    return None


def _started(platform, run_id: str) -> int | None:
    """The pid of the run's process, once the run is STARTED."""
    run = platform.instance().get_run_by_id(run_id)
    return _run_pid(platform, run_id) if run.status == DagsterRunStatus.STARTED else None


def _finished(platform, run_id: str):
    run = platform.instance().get_run_by_id(run_id)
    return run if run.is_finished else None
