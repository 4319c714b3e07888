"""The UI route recovers a killed sync too: the daemon's housekeeping reaps, the UI's backfill completes.

`dagster dev` (webserver + daemon) runs on the test instance; a headless
`stock-assets sync` is killed (SIGKILL to its whole process group, so its runs
are left STARTED and nothing of it can clean up). Then, with no command of
ours run again:
  1. the `housekeeping` sensor, in the daemon, marks the killed runs FAILED;
  2. a backfill of exactly the failed partitions, launched through the
     webserver's GraphQL API (what the UI's "Materialize… → Failed" sends),
     is run by the daemon, and every one of those partitions ends
     MATERIALIZED.
"""

from __future__ import annotations

import os
import signal
import time

import dagster as dg
import pytest
from dagster import AssetPartitionStatus, DagsterRunStatus

from stock_assets.defs.partitions import symbol_shards
from stock_assets.runs.plan import shards_of_run
from stock_assets_tests.test_interruptions import start_sync, wait_until_mid_shard
from stock_assets_tests.ui_support import dagster_dev, runs_progress, wait_while_moving

SHARD_ASSETS = ["company_profiles", "price_history", "dividend_history"]

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""

BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
  }
}
"""


def wait_for(what: str, check, timeout: float, log=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"{what} within {timeout:.0f} s\n{log()}")


@pytest.mark.timeout(1200)  # the last bound; the waits inside fail first, with what they saw
@pytest.mark.scenario
@pytest.mark.slow
def test_after_a_killed_sync_the_daemon_reaps_and_the_ui_backfill_completes(platform, tmp_path):
    platform.instance()
    with dagster_dev(tmp_path) as ui:
        platform.sim.faults.latency_s = 1.0
        proc, log = start_sync(platform, tmp_path)
        try:
            wait_until_mid_shard(platform, proc, log)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the sync and its workers: nothing of it cleans up
            proc.wait(timeout=30)
        platform.sim.faults.latency_s = 0.0
        instance = platform.instance()
        stuck = [r for r in instance.get_runs(dg.RunsFilter(statuses=[DagsterRunStatus.STARTED]))
                 if shards_of_run(r.tags)]
        assert stuck, "the kill left no shard run in progress"

        # 1. The daemon's housekeeping marks them failed (it runs every 30 s).
        def reaped():
            statuses = {platform.instance().get_run_by_id(r.run_id).status for r in stuck}
            return statuses == {DagsterRunStatus.FAILURE}
        wait_for("the housekeeping sensor did not reap the killed runs", reaped, 300, ui.log_tail)

        instance = platform.instance()
        killed = sorted({shard for r in stuck for shard in shards_of_run(r.tags)})
        statuses = {asset: instance.get_status_by_partition(dg.AssetKey(asset), killed, symbol_shards)
                    for asset in SHARD_ASSETS}
        # The step the kill cut short shows FAILED. Not every shard of a killed range: a step
        # reports each shard as it ends (an empty shard inside the range, at once), so some of the
        # range may be MATERIALIZED; none is left in progress.
        seen = {statuses[a][shard] for a in SHARD_ASSETS for shard in killed}
        assert AssetPartitionStatus.FAILED in seen and seen <= {AssetPartitionStatus.FAILED,
                                                                AssetPartitionStatus.MATERIALIZED}, statuses
        failed = [shard for shard in killed
                  if any(statuses[a][shard] == AssetPartitionStatus.FAILED for a in SHARD_ASSETS)]

        # 2. The UI's backfill of the failed partitions (what Materialize… → Failed selects):
        # launched through the webserver, run by the daemon.
        answer = ui.graphql(LAUNCH_BACKFILL, {"params": {
            "assetSelection": [{"path": [name]} for name in SHARD_ASSETS], "partitionNames": failed}})
        launched = answer["data"]["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]

        def completed():
            state = ui.graphql(BACKFILL_STATUS, {"id": backfill_id})["data"]["partitionBackfillOrError"]
            assert state["status"] not in ("FAILED", "CANCELED", "COMPLETED_FAILED"), state
            runs = platform.instance().get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
            return state["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), runs_progress(runs)
        # A run a partition, each a new process, three at once: on a loaded machine that takes what it
        # takes. The wait fails only if the backfill stops moving.
        wait_while_moving("the backfill did not complete", completed, log=ui.log_tail)

    instance = platform.instance()
    for asset in SHARD_ASSETS:
        status = instance.get_status_by_partition(dg.AssetKey(asset), killed, symbol_shards)
        assert set(status.values()) == {AssetPartitionStatus.MATERIALIZED}, (asset, status)
    symbols = {s for (s,) in platform.sql("SELECT symbol FROM market.symbols WHERE shard IN "
                                         f"({', '.join(repr(p) for p in killed)})")}
    profiled = {s for (s,) in platform.sql("SELECT symbol FROM market.company_profiles")}
    assert symbols <= profiled
