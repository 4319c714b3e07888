"""The Celery workers' settings (`celery -A dagster_celery.app worker` imports this module when it is
on PYTHONPATH): the same broker and result backend as the instance's CeleryRunLauncher."""

import os

broker_url = os.environ["STOCK_ASSETS_BROKER"]
result_backend = os.environ["STOCK_ASSETS_BROKER"]
# A worker takes one run at a time per pool process (a run is minutes of API calls, not a small
# task), and reserves none beyond those it executes: Celery's prefetch of one more per process let a
# busy host take the next run while another host idled (measured: both shard runs of a sync on one
# host, two hosts 0.96x one host's pace; bench/bench_scale_out.py).
worker_prefetch_multiplier = 1
worker_disable_prefetch = True
# The result records which worker executed each run (`AsyncResult(task_id).worker`).
result_extended = True
