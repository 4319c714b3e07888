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
