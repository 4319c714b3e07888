"""Per-call accounting: what every HTTP attempt cost, for metrics and reports."""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CallRecord:
    """One HTTP attempt (a retried call leaves one record per attempt)."""

    endpoint: str
    status: int | None  # None when no response arrived (timeout, reset)
    outcome: str  # "ok", or why the attempt failed: "429", "5xx", "timeout", "truncated", ...
    latency_s: float
    bytes: int
    attempt: int  # 0 for the first try, 1 for the first retry, ...
    limiter_wait_s: float
    started_at: float  # unix time

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass
class EndpointStats:
    endpoint: str
    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    rate_limited: int = 0
    bytes: int = 0
    limiter_wait_s: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)

    def add(self, call: CallRecord) -> None:
        self.calls += 1
        self.succeeded += call.ok
        self.failed += not call.ok
        self.retries += call.attempt > 0
        self.rate_limited += call.outcome == "429"
        self.bytes += call.bytes
        self.limiter_wait_s += call.limiter_wait_s
        self.latencies.append(call.latency_s)

    def latency(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[round(q * 100) - 1]

    @property
    def latency_mean(self) -> float:
        return statistics.fmean(self.latencies) if self.latencies else 0.0


class CallLog:
    """Thread-safe list of CallRecords; callers take a mark and read what came after."""

    def __init__(self) -> None:
        self._calls: list[CallRecord] = []
        self._lock = threading.Lock()

    def add(self, call: CallRecord) -> None:
        with self._lock:
            self._calls.append(call)

    def mark(self) -> int:
        with self._lock:
            return len(self._calls)

    def since(self, mark: int = 0) -> list[CallRecord]:
        with self._lock:
            return self._calls[mark:]

    def stats(self, mark: int = 0) -> dict[str, EndpointStats]:
        by_endpoint: dict[str, EndpointStats] = {}
        for call in self.since(mark):
            by_endpoint.setdefault(call.endpoint, EndpointStats(call.endpoint)).add(call)
        return by_endpoint
