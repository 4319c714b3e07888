"""FMP's plans as the simulator serves them: per-minute limits, history depth, gated endpoints.

The simulator's own table, written from FMP's documentation, never the
client's: a fake that shared the client's tables could not catch the
client's mistakes about them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    name: str
    calls_per_min: int
    history_years: int  # how far back historical-price-eod reaches ("30+" serves everything)
    endpoints_not_served: frozenset[str]

    def serves(self, endpoint: str) -> bool:
        return endpoint not in self.endpoints_not_served


_BULK = frozenset({"eod-bulk", "profile-bulk"})  # Ultimate only: others get a 402

PLANS: dict[str, Plan] = {
    "starter": Plan("starter", 300, 5, _BULK),
    "premium": Plan("premium", 750, 30, _BULK),
    "ultimate": Plan("ultimate", 3000, 30, frozenset()),
}


def get_plan(name: str) -> Plan:
    try:
        return PLANS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown FMP plan {name!r}: one of {', '.join(PLANS)}") from None
