"""Resources, configured from the environment (and settable as resource config).

`FMP_API_KEY` is read through `EnvVar`, so Dagster resolves it in each step
process and never writes its value into run config or the UI. The optional
settings are read here with their defaults.
"""

from __future__ import annotations

import os

import dagster as dg

from stock_assets.fmp import DEFAULT_BASE_URL, FMPResource
from stock_assets.warehouse import WarehouseResource

DEFAULT_DB = "data/stocks.duckdb"
DEFAULT_LIMITER_STATE = "data/fmp-rate-limit.sqlite"


class SyncSettings(dg.ConfigurableResource):
    """What the sync fetches and how strict it is."""

    exchanges: list[str] = ["NYSE", "NASDAQ", "AMEX"]
    include_etfs: bool = True
    symbol_file: str | None = None  # one symbol a line: restricts the universe to these
    history_years: int = 5  # price_history starts this many years before the last session
    history_start: str | None = None  # or an explicit YYYY-MM-DD
    profile_max_age_days: int = 7
    max_failed_share: float = 0.01  # a partition fails when more of its items fail


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def fmp_resource() -> FMPResource:
    return FMPResource(
        api_key=dg.EnvVar("FMP_API_KEY"),
        base_url=os.environ.get("FMP_BASE_URL", DEFAULT_BASE_URL),
        plan=os.environ.get("FMP_PLAN", "premium"),
        rate_limit_per_min=_env_int("FMP_RATE_LIMIT_PER_MIN"),
        limiter_state=os.environ.get("FMP_LIMITER_STATE", DEFAULT_LIMITER_STATE),
    )


def warehouse_resource() -> WarehouseResource:
    return WarehouseResource(database=os.environ.get("STOCK_ASSETS_DB", DEFAULT_DB))


def settings_resource() -> SyncSettings:
    settings = SyncSettings()
    if os.environ.get("STOCK_ASSETS_HISTORY_START"):
        settings = SyncSettings(history_start=os.environ["STOCK_ASSETS_HISTORY_START"])
    return settings


def all_resources() -> dict[str, object]:
    return {"fmp": fmp_resource(), "warehouse": warehouse_resource(), "settings": settings_resource()}
