"""The six assets: the universe, prices, dividends and company profiles."""

from stock_assets.assets.dividends import dividend_history, dividends
from stock_assets.assets.prices import daily_prices, price_history
from stock_assets.assets.profiles import company_profiles
from stock_assets.assets.universe import symbols

ALL_ASSETS = [symbols, daily_prices, price_history, dividends, dividend_history, company_profiles]
DAILY_ASSETS = [daily_prices, dividends]
SHARD_ASSETS = [company_profiles, price_history, dividend_history]
HISTORY_ASSETS = [price_history, dividend_history]

__all__ = ["ALL_ASSETS", "DAILY_ASSETS", "SHARD_ASSETS", "HISTORY_ASSETS", "symbols", "daily_prices",
           "price_history", "dividends", "dividend_history", "company_profiles"]
