"""dagster-celery's run launcher, whose health check also notices a worker host that is gone.

A Celery worker killed with its host (power cut, SIGKILL, a lost VM) never reports on the task it
held: the result backend keeps the task STARTED, so dagster-celery's `check_run_worker_health`
answers RUNNING for ever and Dagster's run monitoring never fails the run; its partitions stay
"in progress" and `backfill-failed` cannot take them. The STARTED state records the worker's name
(Celery's `track_started`, which dagster-celery sets), so this launcher asks that worker: no answer
to a ping means no worker, and the run's worker is reported FAILED. Run monitoring then fails the
run and frees its slots, as it does for any launcher's dead worker (`deploy/dagster.yaml`).

A run a headless command executes in the same instance has no Celery task (dagster-celery's check
raised KeyError on it, in every pass of run monitoring): it is reported running, since its command
watches it and `instance_health.reap_dead_runs` fails it if that command's process dies.
"""

from __future__ import annotations

from dagster_celery.launcher import DAGSTER_CELERY_TASK_ID_TAG, CheckRunHealthResult, WorkerStatus
from dagster_celery.launcher import CeleryRunLauncher as _DagsterCeleryRunLauncher

# A live worker answers within milliseconds, from its main process, even while its pool runs
# syncs; a loaded host may be slow: a false "gone" would fail a live run, so the wait is generous.
PING_TIMEOUT_S = 10.0


class CeleryRunLauncher(_DagsterCeleryRunLauncher):
    """`dagster_celery.launcher.CeleryRunLauncher` with a dead worker's runs reported FAILED."""

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        if DAGSTER_CELERY_TASK_ID_TAG not in run.tags:  # a headless command's run: the command watches it
            return CheckRunHealthResult(WorkerStatus.RUNNING, "Not a Celery run: its own command watches it.")
        health = super().check_run_worker_health(run)
        if health.status != WorkerStatus.RUNNING:
            return health
        started = self.celery.AsyncResult(run.tags[DAGSTER_CELERY_TASK_ID_TAG]).info
        worker = started.get("hostname") if isinstance(started, dict) else None
        if worker and not self.celery.control.ping(destination=[worker], timeout=PING_TIMEOUT_S, limit=1):
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"The Celery worker {worker} that started this run does not answer: its host is gone "
                f"or the worker was killed. `stock-assets backfill-failed` fetches what the run left.")
        return health
