"""The Celery workers' settings (`celery -A dagster_celery.app worker` imports this module when it is
on PYTHONPATH): the same broker and result backend as the instance's CeleryRunLauncher."""

import os

broker_url = os.environ["STOCK_ASSETS_BROKER"]
result_backend = os.environ["STOCK_ASSETS_BROKER"]
# A worker takes one run at a time per pool process: a run is minutes of API calls, not a small task.
worker_prefetch_multiplier = 1
# The result records which worker executed each run (`AsyncResult(task_id).worker`).
result_extended = True
