"""Resources, built from the configuration (`config.Config`), and settable as resource config.

`FMP_API_KEY` is given to Dagster as `EnvVar`, so Dagster resolves it in each
step process and never writes its value into run config or the UI.
"""

from __future__ import annotations

import dagster as dg

from stock_assets.config import Config
from stock_assets.fmp import FMPResource
from stock_assets.warehouse import WarehouseResource


class SyncSettings(dg.ConfigurableResource):
    """What the sync fetches and how strict it is."""

    exchanges: list[str] = ["NYSE", "NASDAQ", "AMEX"]
    include_etfs: bool = True
    symbol_file: str | None = None  # one symbol a line: restricts the universe to these
    history_years: int = 5  # price_history starts this many years before the last session
    history_start: str | None = None  # or an explicit YYYY-MM-DD
    # A full profile at least this often; the screener layer is refreshed daily (profile_refresh).
    profile_max_age_days: int = 30
    # A partition fails when more of its items fail after retries. 0: "Materialized" means complete;
    # what failed shows Failed, and every route that mends Failed partitions fetches it.
    max_failed_share: float = 0.0
    # Fetch again what the warehouse already holds fresh. Set it for one run in the
    # launchpad (resources: settings: config: refresh: true) to redo a partition.
    refresh: bool = False


def fmp_resource(config: Config) -> FMPResource:
    return FMPResource(
        api_key=dg.EnvVar("FMP_API_KEY"),
        base_url=config.base_url,
        plan=config.plan,
        rate_limit_per_min=config.rate_limit_per_min,
        limiter_state=config.limiter_state,
    )


def warehouse_resource(config: Config) -> WarehouseResource:
    return WarehouseResource(database=config.database, data_path=config.data_path, catalog=config.catalog)


def settings_resource(config: Config) -> SyncSettings:
    history_start = config.history_start.isoformat() if config.history_start else None
    return SyncSettings(history_start=history_start, profile_max_age_days=config.profile_max_age_days)


def all_resources(config: Config) -> dict[str, object]:
    return {"fmp": fmp_resource(config), "warehouse": warehouse_resource(config),
            "settings": settings_resource(config)}
