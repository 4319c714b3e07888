"""The FMP client: typed endpoints, shared pacing, retries, adaptive chunks."""

from stock_assets.fmp.client import DEFAULT_BASE_URL, FMPResource
from stock_assets.fmp.errors import (
    FMPAuthError, FMPBandwidthError, FMPError, FMPForbiddenError, FMPPlanError, FMPQueryError,
    FMPRateLimitError, FMPTransientError)
from stock_assets.fmp.plans import PLANS, get_plan

__all__ = [
    "DEFAULT_BASE_URL", "FMPResource", "FMPAuthError", "FMPBandwidthError", "FMPError",
    "FMPForbiddenError", "FMPPlanError", "FMPQueryError", "FMPRateLimitError",
    "FMPTransientError", "PLANS", "get_plan",
]
