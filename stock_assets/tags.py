"""Run tags the project sets: which sync or backfill a run belongs to, and its process."""

SYNC_TAG = "stock_assets/sync"
BACKFILL_TAG = "stock_assets/backfill"
PID_TAG = "stock_assets/pid"
HOST_TAG = "stock_assets/host"
