"""Typed FMP errors: each says what happened and what the user can do.

Messages never contain the API key: they are built from the endpoint name and
FMP's own error text, which is redacted before it gets here.
"""

from __future__ import annotations


class FMPError(Exception):
    """Base of every error the FMP client raises.

    `stops_fetch`: the error would be the same for every item (a rejected key,
    a plan without the endpoint, a spent bandwidth cap), so a fetch of many
    items stops at once rather than spending thousands of calls to learn it
    thousands of times. A 402 goes up too, so the caller can take a cheaper
    route.
    """

    stops_fetch = False

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None):
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


class FMPAuthError(FMPError):
    """401: the key is missing or invalid. Never retried."""

    stops_fetch = True


class FMPForbiddenError(FMPError):
    """403: a legacy path, or a key FMP has restricted. Never retried."""

    stops_fetch = True


class FMPPlanError(FMPError):
    """402: the plan lacks this endpoint or parameter. Callers fall back to a cheaper route."""

    stops_fetch = True


class FMPQueryError(FMPError):
    """400: a missing or bad query parameter (also FMP's "no more parts" for bulk)."""


class FMPRateLimitError(FMPError):
    """429 (or a 200 carrying `Limit Reach`) that persisted through every retry."""


class FMPBandwidthError(FMPError):
    """The trailing 30-day bandwidth cap: waiting minutes will not help."""

    stops_fetch = True


class FMPTransientError(FMPError):
    """5xx, timeouts, resets, truncated or malformed bodies that persisted through every retry."""


def error_for_status(status: int, endpoint: str, fmp_message: str) -> FMPError:
    """The non-retryable error for a 4xx answer, with advice on what to do."""
    said = f" FMP said: {fmp_message}" if fmp_message else ""
    if status == 401:
        return FMPAuthError(
            f"FMP rejected the API key (401) on {endpoint}: check FMP_API_KEY.{said}",
            endpoint=endpoint, status=status)
    if status == 402:
        return FMPPlanError(
            f"{endpoint} is not in this FMP plan (402): choose a route the plan serves, "
            f"or set FMP_PLAN to the plan the key really has.{said}",
            endpoint=endpoint, status=status)
    if status == 403:
        return FMPForbiddenError(
            f"FMP refused {endpoint} (403): legacy /api/v3 paths are not served to new keys, "
            f"use the stable base URL (FMP_BASE_URL); a 403 can also mean the key is restricted.{said}",
            endpoint=endpoint, status=status)
    if status == 400:
        return FMPQueryError(
            f"FMP rejected the query for {endpoint} (400): a parameter is missing or invalid.{said}",
            endpoint=endpoint, status=status)
    return FMPError(f"FMP answered {status} on {endpoint}.{said}", endpoint=endpoint, status=status)
