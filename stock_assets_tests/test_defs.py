"""The code location loads, and every asset, check, job, schedule and sensor in it resolves."""

from __future__ import annotations

import dagster as dg

from stock_assets.definitions import defs

ASSETS = {"symbols", "daily_prices", "price_history", "dividends", "dividend_history", "company_profiles"}


def test_defs_load_and_everything_resolves(platform):
    definitions = defs()
    dg.Definitions.validate_loadable(definitions)
    repository = definitions.get_repository_def()
    graph = repository.asset_graph
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == ASSETS
    checks = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert ("daily_prices", "coverage") in checks and ("company_profiles", "profiles_fresh") in checks
    assert {asset for asset, _ in checks} == ASSETS
    for job in ("universe", "session", "shards"):
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
