"""The six assets: the universe, prices, dividends and company profiles."""

import dagster as dg

from stock_assets.config import Config

from stock_assets.assets.dividends import dividend_history, dividends
from stock_assets.assets.prices import daily_prices, price_history
from stock_assets.assets.profiles import company_profiles
from stock_assets.assets.universe import symbols
from stock_assets.partitions import trading_days, trading_days_from

ALL_ASSETS = [symbols, daily_prices, price_history, dividends, dividend_history, company_profiles]
DAILY_ASSETS = [daily_prices, dividends]
SHARD_ASSETS = [company_profiles, price_history, dividend_history]
HISTORY_ASSETS = [price_history, dividend_history]


def assets_for(config: Config) -> list[dg.AssetsDefinition]:
    """The six assets, their trading days starting at the configured STOCK_ASSETS_START."""
    days = trading_days_from(config.trading_days_start)

    def configured(spec: dg.AssetSpec) -> dg.AssetSpec:
        return spec.replace_attributes(partitions_def=days) if spec.partitions_def == trading_days else spec

    return dg.map_asset_specs(configured, ALL_ASSETS)

__all__ = ["assets_for", "ALL_ASSETS", "DAILY_ASSETS", "SHARD_ASSETS", "HISTORY_ASSETS", "symbols", "daily_prices",
           "price_history", "dividends", "dividend_history", "company_profiles"]
