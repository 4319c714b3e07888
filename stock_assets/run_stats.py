"""What one materialization did: items, phases, optimizations, API calls.

Assets fill a `RunStats` as they go; it becomes the MaterializeResult's
metadata (numbers, so the UI plots them) and the rows of the metrics tables.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator


from stock_assets.fmp.accounting import CallLog, EndpointStats

# The warehouse table each asset writes: its columns are the asset's schema in the UI.
ASSET_TABLES = {
    "symbols": "market.symbols", "splits": "market.splits", "daily_prices": "market.prices", "price_history": "market.prices",
    "dividends": "market.dividends", "dividend_history": "market.dividends",
    "company_profiles": "market.company_profiles",
}


# The metrics line of a history fetched again after a split: a cost, reported apart from the savings.
RESTATED_AFTER_SPLIT = "restated after split"


@dataclass
class Phase:
    name: str
    started_at: float  # unix time
    duration_s: float = 0.0
    items: int = 0
    succeeded: int = 0
    failed: int = 0

    @property
    def throughput(self) -> float:
        return self.items / self.duration_s if self.duration_s > 0 else 0.0


@dataclass
class Optimization:
    """A named skip: what was considered, what was skipped, what it saved.

    Time saved is calls saved at the pace the key's limit allows: the calls
    would have queued behind the limiter, so that is what they would cost.
    """

    name: str
    considered: int
    skipped: int
    calls_saved: int
    seconds_saved: float


@dataclass
class RunStats:
    asset: str
    partition: str | None
    calls: CallLog
    pace_per_min: float
    started_at: float = field(default_factory=time.time)
    route: str = ""
    items_total: int = 0
    items_succeeded: int = 0
    items_failed: int = 0
    items_skipped: int = 0
    rows_written: int = 0
    rejects: int = 0
    revisions_repaired: int = 0  # stored bars FMP's official answer corrected (values that differed)
    failed_items: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    optimizations: list[Optimization] = field(default_factory=list)
    _call_mark: int = 0

    def __post_init__(self) -> None:
        self._call_mark = self.calls.mark()

    @contextmanager
    def phase(self, name: str) -> Iterator[Phase]:
        phase = Phase(name, time.time())
        started = time.monotonic()
        try:
            yield phase
        finally:
            phase.duration_s = time.monotonic() - started
            self.phases.append(phase)

    def add_phase_time(self, name: str, seconds: float, items: int = 0, failed: int = 0) -> None:
        """Accumulate time spent in a phase that happens in many short pieces (writes)."""
        phase = next((p for p in self.phases if p.name == name), None)
        if phase is None:
            phase = Phase(name, time.time() - seconds)
            self.phases.append(phase)
        phase.duration_s += seconds
        phase.items += items
        phase.succeeded += items - failed
        phase.failed += failed

    def optimized(self, name: str, considered: int, skipped: int, calls_saved: int) -> None:
        seconds = calls_saved / (self.pace_per_min / 60) if self.pace_per_min else 0.0
        self.optimizations.append(Optimization(name, considered, skipped, calls_saved, seconds))

    def api_stats(self) -> dict[str, EndpointStats]:
        return self.calls.stats(self._call_mark)

    @property
    def api_calls(self) -> int:
        return sum(s.calls for s in self.api_stats().values())

    @property
    def success_rate(self) -> float:
        attempted = self.items_succeeded + self.items_failed
        return self.items_succeeded / attempted if attempted else 1.0

    @property
    def duration_s(self) -> float:
        return time.time() - self.started_at

    def metadata(self) -> dict[str, Any]:
        """Flat numbers and short texts for Dagster's metadata."""
        meta: dict[str, Any] = {
            "route": self.route or "none",
            "duration_s": round(self.duration_s, 3),
            "items_total": self.items_total,
            "items_succeeded": self.items_succeeded,
            "items_failed": self.items_failed,
            "items_skipped": self.items_skipped,
            "item_success_rate": round(self.success_rate, 5),
            "rows_written": self.rows_written,
            "rejected_rows": self.rejects,
            "revisions_repaired": self.revisions_repaired,
            "api_calls": self.api_calls,
        }
        for endpoint, s in sorted(self.api_stats().items()):
            meta[f"api_calls/{endpoint}"] = s.calls
            meta[f"api_retries/{endpoint}"] = s.retries
            meta[f"api_latency_p95_s/{endpoint}"] = round(s.latency(0.95), 4)
        for o in self.optimizations:
            meta[f"saved_calls/{o.name}"] = o.calls_saved
            meta[f"skipped_items/{o.name}"] = o.skipped
        meta["saved_calls"] = sum(o.calls_saved for o in self.optimizations)
        meta["saved_s"] = round(sum(o.seconds_saved for o in self.optimizations), 2)
        for p in self.phases:
            meta[f"phase_s/{p.name}"] = round(p.duration_s, 3)
        if self.failed_items:
            shown = self.failed_items[:50]
            more = len(self.failed_items) - len(shown)
            meta["failed_symbols"] = ", ".join(shown) + (f" (+{more} more)" if more else "")
        if self.notes:
            meta["notes"] = " | ".join(self.notes)
        table = ASSET_TABLES.get(self.asset)
        if table:
            meta["table"] = table
        return meta


def calls_for(items: int, per_call: int = 1) -> int:
    return math.ceil(items / per_call) if items else 0
