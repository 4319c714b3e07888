"""The code location loads, and every asset, check, job, schedule and sensor in it resolves."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from stock_assets.defs.definitions import defs
from stock_assets.defs.jobs import splits_job as corporate_actions_job
from stock_assets.defs.assets.common import FMP_POOL
from stock_assets.runs.instance_health import pool_limit
from stock_assets.runs.plan import shards_of_run

ASSETS = {"symbols", "splits", "daily_prices", "price_history", "dividends", "dividend_history",
          "company_profiles"}


def test_defs_load_and_everything_resolves(platform):
    definitions = defs()
    dg.Definitions.validate_loadable(definitions)
    repository = definitions.get_repository_def()
    graph = repository.asset_graph
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == ASSETS
    checks = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert ("daily_prices", "coverage") in checks and ("company_profiles", "profiles_fresh") in checks
    assert {asset for asset, _ in checks} == ASSETS
    for job in ("universe", "corporate_actions", "session", "shards"):
        assert definitions.resolve_job_def(job).name == job
    assert definitions.resolve_schedule_def("daily_sync_schedule").cron_schedule == "30 17 * * 1-5"
    for sensor in ("sync_after_universe", "housekeeping"):
        assert definitions.resolve_sensor_def(sensor).name == sensor
    # The key is the variable's name in the resource's config, never its value.
    fmp = definitions.resources["fmp"]
    assert isinstance(fmp.api_key, dg.EnvVar) and fmp.api_key.env_var_name == "FMP_API_KEY"
    assert "test-key" not in repr(fmp)


def test_trading_days_start_where_the_configuration_says(platform, monkeypatch):
    """STOCK_ASSETS_START is read when the definitions are built, not when a module is imported."""
    monkeypatch.setenv("STOCK_ASSETS_START", "2024-06-03")
    graph = defs().get_repository_def().asset_graph
    for asset in ("daily_prices", "dividends"):
        assert graph.get(dg.AssetKey(asset)).partitions_def.get_first_partition_key() == "2024-06-03"
    assert graph.get(dg.AssetKey("price_history")).partitions_def.get_first_partition_key() == "A1"


def test_importing_the_package_reads_no_environment():
    """No module of ours reads one of our variables when it is imported (they are read in `config`)."""
    import subprocess
    import sys

    code = """
import importlib, os, pkgutil
class Watched(dict):
    def _seen(self, key):
        if str(key).startswith(("FMP_", "STOCK_ASSETS_")):
            raise SystemExit(f"{key} read at import")
    def __getitem__(self, key):
        self._seen(key); return super().__getitem__(key)
    def get(self, key, default=None):
        self._seen(key); return super().get(key, default)
    def __contains__(self, key):
        self._seen(key); return super().__contains__(key)
os.environ = Watched(os.environ)
import stock_assets, fmp_simulator
for package in (stock_assets, fmp_simulator):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
print("imported")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "STOCK_ASSETS_START": "2024-06-03"})
    assert result.returncode == 0 and "imported" in result.stdout, result.stderr


def test_the_daily_sync_is_on_from_the_start():
    definitions = defs()
    schedule = definitions.resolve_schedule_def("daily_sync_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    for sensor in ("sync_after_universe", "housekeeping"):
        assert definitions.resolve_sensor_def(sensor).default_status == dg.DefaultSensorStatus.RUNNING


def _sensor_requests(platform, run_result) -> list:
    from stock_assets.defs.schedules import sync_after_universe

    instance = platform.instance()
    run = instance.get_run_by_id(run_result.run_id)
    event = next(e for e in run_result.all_events if e.event_type == dg.DagsterEventType.RUN_SUCCESS)
    with dg.build_run_status_sensor_context(
            sensor_name="sync_after_universe", dagster_event=event, dagster_instance=instance, dagster_run=run,
            resources=platform.resources()) as context:  # the fmp resource opens a client: in a context
        result = sync_after_universe(context)
        return list(result) if result is not None and not isinstance(result, dg.SkipReason) else [result]


def test_materializing_the_universe_by_hand_starts_the_rest_of_the_sync(platform):
    from stock_assets.defs.assets import assets_for
    from stock_assets.config import Config

    # As the catalog launches it: the code location's asset job, the universe alone selected.
    asset_job = dg.Definitions(assets=assets_for(Config.from_env()),
                               resources=platform.resources()).resolve_implicit_global_asset_job_def()
    universe = asset_job.execute_in_process(instance=platform.instance(), asset_selection=[dg.AssetKey("symbols")])
    assert platform.instance().get_run_by_id(universe.run_id).asset_selection == {dg.AssetKey("symbols")}
    # At once: the day's splits, the session, and every shard with work (a first sync: all present).
    splits, session, *shards = _sensor_requests(platform, universe)
    assert splits.job_name == "corporate_actions" and splits.tags["stock_assets/sync"] == f"ui-{universe.run_id[:8]}"
    assert session.job_name == "session" and session.partition_key == splits.partition_key
    assert {r.tags["stock_assets/sync"] for r in [session, *shards]} == {f"ui-{universe.run_id[:8]}"}
    present = {s for (s,) in platform.sql("SELECT DISTINCT shard FROM market.symbols")}
    requested = [shards_of_run({**r.tags, **({"dagster/partition": r.partition_key} if r.partition_key else {})})
                 for r in shards]
    assert {r.job_name for r in shards} == {"shards"} and len(shards) <= pool_limit(platform.instance(), FMP_POOL) < len(present)
    assert present <= set().union(*requested)  # a few runs of shard ranges: every shard with work

    # The shards' runs began before the splits were stored: after the splits run, a shard whose
    # stored history predates a split gets a run that restates it, and no other shard does.
    shard = sorted(present)[0]
    history = asset_job.execute_in_process(instance=platform.instance(), partition_key=shard,
                                           asset_selection=[dg.AssetKey("price_history")])
    assert history.success
    (symbol, end), = platform.sql("SELECT h.symbol, h.end_date FROM market.history_loads h JOIN market.symbols u "
                                  "USING (symbol) WHERE u.shard = ? AND h.dataset = 'prices' LIMIT 1", [shard])
    splits_job = dg.Definitions(assets=assets_for(Config.from_env()), jobs=[corporate_actions_job],
                                resources=platform.resources()).resolve_job_def("corporate_actions")
    splits_run = splits_job.execute_in_process(instance=platform.instance(), partition_key=splits.partition_key,
                                               tags=splits.tags)
    (nothing,) = _sensor_requests(platform, splits_run)
    assert isinstance(nothing, dg.SkipReason)
    with platform.writer() as conn:  # a split after the history was loaded
        conn.execute("INSERT INTO market.splits (symbol, date, numerator, denominator, loaded_at) "
                     "VALUES (?, ?, 2, 1, now())",
                     [symbol, end + dt.timedelta(days=1)])
    (restate,) = _sensor_requests(platform, splits_run)
    assert restate.partition_key == shard and restate.job_name == "shards"
    assert set(restate.asset_selection) == {dg.AssetKey("price_history"), dg.AssetKey("dividend_history")}
    assert restate.run_key == f"ui-{universe.run_id[:8]}:{shard}:restated"

    # A run that refreshed more than the universe is not the start of a sync.
    other = asset_job.execute_in_process(instance=platform.instance(), partition_key=shard,
                                         asset_selection=[dg.AssetKey("company_profiles")])
    (skip,) = _sensor_requests(platform, other)
    assert isinstance(skip, dg.SkipReason) and "universe alone" in skip.skip_message


def test_a_days_shards_go_into_as_many_runs_as_the_instance_runs_at_once():
    """One host's instance admits 3 runs of the `fmp` pool; a deployment of many hosts admits more,
    and its shard work is spread over as many runs, so every host has a range to fetch."""
    from stock_assets.defs.assets import HISTORY_ASSETS
    from stock_assets.defs.partitions import SHARD_KEYS, shard_range
    from stock_assets.runs.plan import shard_runs

    work = {shard: tuple(HISTORY_ASSETS) for shard in SHARD_KEYS[:12]}
    sizes = {shard: 10 for shard in work}
    with dg.instance_for_test() as instance:
        for limit in (5, 2):
            instance.event_log_storage.set_concurrency_slots(FMP_POOL, limit)
            planned = shard_runs(work, sizes, instance)
            assert len(planned) == limit
            covered = [s for run in planned for s in shard_range(run.partition_key, run.last_partition or run.partition_key)]
            assert covered == list(work)  # every shard once, in order
