"""The assets: the universe, its splits, prices, dividends and company profiles.

The two trading-day assets are built from the configuration (their partitions
start at STOCK_ASSETS_START, and partitioned checks must share the asset's
partitions exactly); the universe and the shard assets are fixed.
"""

import dagster as dg

from stock_assets.defs.assets.dividends import dividend_history, dividends_asset
from stock_assets.defs.assets.prices import daily_prices_asset, price_history
from stock_assets.defs.assets.profiles import company_profiles
from stock_assets.defs.assets.splits import splits_asset
from stock_assets.defs.assets.universe import symbols
from stock_assets.config import Config
from stock_assets.defs.partitions import trading_days_from

DAILY_ASSETS = [dg.AssetKey("daily_prices"), dg.AssetKey("dividends")]
SPLITS = dg.AssetKey("splits")
HISTORY_ASSETS = [price_history.key, dividend_history.key]
SHARD_ASSETS = [company_profiles.key, *HISTORY_ASSETS]
ASSET_NAMES = ["symbols", "splits", "daily_prices", "price_history", "dividends", "dividend_history",
               "company_profiles"]


def assets_for(config: Config) -> list[dg.AssetsDefinition]:
    """The assets, their trading days starting at the configured STOCK_ASSETS_START."""
    days = trading_days_from(config.trading_days_start)
    return [symbols, splits_asset(days), daily_prices_asset(days), price_history, dividends_asset(days),
            dividend_history, company_profiles]


__all__ = ["ASSET_NAMES", "DAILY_ASSETS", "SPLITS", "HISTORY_ASSETS", "SHARD_ASSETS", "assets_for", "company_profiles",
           "dividend_history", "price_history", "symbols"]
