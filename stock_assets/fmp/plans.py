"""FMP plans: per-minute limits and which endpoints each plan serves.

Shared by the client (to choose a route and a pace) and the simulator (to gate
endpoints the way FMP does), so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PlanName = Literal["starter", "premium", "ultimate"]

BULK_ENDPOINTS = frozenset({"eod-bulk", "profile-bulk"})


@dataclass(frozen=True)
class Plan:
    name: str
    calls_per_min: int
    history_years: int  # how far back historical-price-eod reaches
    endpoints_not_served: frozenset[str]

    def serves(self, endpoint: str) -> bool:
        return endpoint not in self.endpoints_not_served


PLANS: dict[str, Plan] = {
    "starter": Plan("starter", 300, 5, BULK_ENDPOINTS),
    "premium": Plan("premium", 750, 30, BULK_ENDPOINTS),
    "ultimate": Plan("ultimate", 3000, 30, frozenset()),
}


def get_plan(name: str) -> Plan:
    try:
        return PLANS[name.lower()]
    except KeyError:
        raise ValueError(
            f"Unknown FMP plan {name!r}: use one of {', '.join(PLANS)} (FMP_PLAN)."
        ) from None
