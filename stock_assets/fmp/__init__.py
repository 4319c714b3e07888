"""The FMP client: typed endpoints, shared pacing, retries, adaptive chunks.

The assets use only what is exported here.
"""

from stock_assets.fmp.chunking import Chunk, FetchSummary, ItemFailure
from stock_assets.fmp.client import DEFAULT_BASE_URL, DEFAULT_PACE_FRACTION, FMPResource
from stock_assets.fmp.errors import (
    FMPAuthError, FMPBandwidthError, FMPError, FMPForbiddenError, FMPPlanError, FMPQueryError,
    FMPRateLimitError, FMPTransientError)
from stock_assets.fmp.plans import PLANS, get_plan
from stock_assets.fmp.records import Parsed, ScreenerRow
from stock_assets.fmp.redaction import redact

__all__ = [
    "Chunk", "DEFAULT_BASE_URL", "DEFAULT_PACE_FRACTION", "FMPResource", "FMPAuthError", "FMPBandwidthError", "FMPError",
    "FMPForbiddenError", "FMPPlanError", "FMPQueryError", "FMPRateLimitError", "FMPTransientError",
    "FetchSummary", "ItemFailure", "PLANS", "Parsed", "ScreenerRow", "get_plan", "redact",
]
