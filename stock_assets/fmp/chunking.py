"""Adaptive chunked fetching: many items, bounded concurrency, no barrier.

Items are fetched by a pool of workers (each call draws from the shared rate
limiter) and handed back in completion order. Every `chunk_size` results form
a chunk that the caller writes and checkpoints while the workers go on, so a
slow item holds back only itself, never the chunk it would have been in. The
chunk size follows the measured throughput so that a chunk takes about
`target_s` seconds: checkpoints land every few seconds whatever the pace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from stock_assets.fmp.errors import FMPAuthError, FMPBandwidthError, FMPForbiddenError, FMPPlanError

T = TypeVar("T")  # an item
V = TypeVar("V")  # what fetching it returned

# Errors that will be the same for every item: stop at once rather than
# spending thousands of calls to learn it thousands of times. A 402 (the plan
# lacks the endpoint) goes up too, so the caller can take a cheaper route.
FATAL_ERRORS = (FMPAuthError, FMPForbiddenError, FMPBandwidthError, FMPPlanError)


@dataclass(frozen=True)
class ItemFailure(Generic[T]):
    item: T
    error: str


@dataclass
class Chunk(Generic[T, V]):
    index: int
    results: list[tuple[T, V]]
    failures: list[ItemFailure[T]]
    elapsed_s: float  # time the chunk took to fill


@dataclass
class FetchSummary(Generic[T]):
    total: int
    succeeded: int = 0
    failures: list[ItemFailure[T]] = field(default_factory=list)
    chunk_sizes: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)


@dataclass
class ChunkSizer:
    """Chunk size = measured items/second × target seconds, within bounds.

    The rate is an exponentially weighted average of what each chunk achieved,
    so one slow chunk nudges the size rather than swinging it.
    """

    target_s: float = 5.0
    min_size: int = 10
    max_size: int = 2000
    initial: int = 50
    smoothing: float = 0.5
    rate: float | None = None
    # What chunks are timed by: the monotonic clock, or a clock a test controls.
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        self.size = max(self.min_size, min(self.max_size, self.initial))

    def observe(self, items: int, seconds: float) -> int:
        if items and seconds > 0:
            measured = items / seconds
            self.rate = measured if self.rate is None else (
                self.smoothing * measured + (1 - self.smoothing) * self.rate)
            self.size = max(self.min_size, min(self.max_size, round(self.rate * self.target_s)))
        return self.size


class Progress:
    """Logs done/total, rate and ETA at most every `every_s` seconds."""

    def __init__(self, label: str, total: int, log: Callable[[str], None], every_s: float = 10.0):
        self.label, self.total, self.log, self.every_s = label, total, log, every_s
        self.started = self.last = time.monotonic()

    def update(self, done: int, failed: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        eta_text = f"{eta:.0f}s" if eta != float("inf") else "?"
        self.log(f"{self.label}: {done}/{self.total} done ({failed} failed), "
                 f"{rate:.1f} items/s, ETA {eta_text}")


def fetch_in_chunks(
    items: Sequence[T] | Iterable[T],
    fetch_one: Callable[[T], V],
    on_chunk: Callable[[Chunk[T, V]], Any],
    *,
    max_in_flight: int = 8,
    sizer: ChunkSizer | None = None,
    label: str = "fetch",
    log: Callable[[str], None] = lambda message: None,
    progress_every_s: float = 10.0,
) -> FetchSummary[T]:
    """Fetch every item; hand results back in adaptive chunks through `on_chunk`.

    `on_chunk` runs in the calling thread (where writes belong: DuckDB allows
    one writer) while the workers keep fetching. Items whose fetch still fails
    after the client's retries are reported in the chunk and the summary, not
    raised; errors that would fail every item (a bad key) stop the fetch.
    """
    items = list(items)
    sizer = sizer or ChunkSizer()
    summary: FetchSummary[T] = FetchSummary(total=len(items))
    progress = Progress(label, len(items), log, progress_every_s)
    clock = sizer.clock
    started = clock()
    pending_items = iter(items)

    with _thread_pool(max_in_flight, label) as pool:
        in_flight: dict[Future, T] = {}

        def top_up() -> None:
            # Keep the pool a little more than busy; never queue all items at
            # once, so a fatal error leaves nothing queued to cancel.
            while len(in_flight) < 2 * max_in_flight:
                item = next(pending_items, _END)
                if item is _END:
                    return
                in_flight[pool.submit(fetch_one, item)] = item

        results: list[tuple[T, V]] = []
        failures: list[ItemFailure[T]] = []
        chunk_started = clock()

        def emit() -> None:
            nonlocal results, failures, chunk_started
            # The next chunk is timed from here: the workers go on fetching
            # while on_chunk writes this one.
            boundary = clock()
            chunk = Chunk(len(summary.chunk_sizes), results, failures, boundary - chunk_started)
            summary.chunk_sizes.append(len(results) + len(failures))
            summary.succeeded += len(results)
            summary.failures.extend(failures)
            sizer.observe(len(results) + len(failures), chunk.elapsed_s)
            results, failures, chunk_started = [], [], boundary
            on_chunk(chunk)

        top_up()
        while in_flight:
            done, _ = wait(in_flight, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in done:
                item = in_flight.pop(future)
                error = future.exception()
                if error is None:
                    results.append((item, future.result()))
                elif isinstance(error, FATAL_ERRORS):
                    _cancel(in_flight)
                    raise error
                else:
                    failures.append(ItemFailure(item, _describe(error)))
                if len(results) + len(failures) >= sizer.size:
                    emit()
            top_up()
            if not in_flight and (results or failures):
                emit()
            progress.update(summary.succeeded + len(results), summary.failed + len(failures))
    summary.elapsed_s = clock() - started
    progress.update(summary.succeeded, summary.failed, force=True)
    return summary


_END: Any = object()


@contextmanager
def _thread_pool(workers: int, label: str) -> Iterator[ThreadPoolExecutor]:
    """A pool that, left by an error or an interruption, does not wait for the calls in flight.

    Waiting would hold a Ctrl-C back by up to a request timeout, for answers
    nobody will read; the calls end on their own.
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=label)
    try:
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _cancel(in_flight: dict[Future, Any]) -> None:
    for future in in_flight:
        future.cancel()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
