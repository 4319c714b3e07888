"""Adaptive chunked fetching: many items, bounded concurrency, no barrier.

Items are fetched by a few threads (each call draws from the shared rate
limiter) and handed back in completion order. Every `chunk_size` results form
a chunk that the caller writes and checkpoints while the workers go on, so a
slow item holds back only itself, never the chunk it would have been in. The
chunk size follows the measured throughput so that a chunk takes about
`target_s` seconds: checkpoints land every few seconds whatever the pace.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from stock_assets.fmp.errors import FMPError

T = TypeVar("T")  # an item
V = TypeVar("V")  # what fetching it returned


@dataclass(frozen=True)
class ItemFailure(Generic[T]):
    item: T
    error: str


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
class Chunk(Generic[T, V]):
    index: int
    results: list[tuple[T, V]]
    failures: list[ItemFailure[T]]
    elapsed_s: float  # time the chunk took to fill
    summary: FetchSummary[T]  # the whole fetch so far, this chunk included


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


def fetch_chunks(
    items: Sequence[T] | Iterable[T],
    fetch_one: Callable[[T], V],
    *,
    max_in_flight: int = 8,
    sizer: ChunkSizer | None = None,
    label: str = "fetch",
    log: Callable[[str], None] = lambda message: None,
    progress_every_s: float = 10.0,
) -> Iterator[Chunk[T, V]]:
    """Fetch every item; yield the results in adaptive chunks as they complete.

    The caller writes each chunk while the fetchers go on (in the caller's
    thread, where writes belong: DuckDB allows one writer). Items whose fetch
    still fails after the client's retries are reported in the chunk and in
    `chunk.summary`, not raised; an error that would fail every item
    (`FMPError.stops_fetch`: a bad key) stops the fetch at once.
    """
    items = list(items)
    cutter = _ChunkCutter(FetchSummary(total=len(items)), sizer or ChunkSizer())
    progress = Progress(label, len(items), log, progress_every_s)
    with _Fetchers(items, fetch_one, max_in_flight, label) as fetchers:
        for item, value, error in fetchers.results():
            if isinstance(error, FMPError) and error.stops_fetch:
                raise error
            cutter.add(item, value, error)
            if cutter.full():  # cut at exactly the size, however many completed together
                yield cutter.cut()
            progress.update(*cutter.done())
    if cutter.pending():
        yield cutter.cut()
    progress.update(*cutter.done(), force=True)


class _Fetchers(Generic[T, V]):
    """Threads that each fetch the next item until none is left, whatever the caller is doing.

    A pool fed from the caller's loop stopped fetching while the caller wrote a
    chunk (up to 5 s for a shard's history), once the few calls queued ahead
    had ended: measured, the first load's call rate dipped to zero at writes.
    Leaving (an error, an interruption, a fatal answer) stops them taking more
    items; nobody waits for the calls in flight, which end on their own.
    """

    def __init__(self, items: list[T], fetch_one: Callable[[T], V], threads: int, label: str):
        self._items, self._count, self._fetch_one = iter(items), len(items), fetch_one
        self._lock, self._stop = threading.Lock(), threading.Event()
        # Bounded: fetchers run ahead of a slow write by this much, not through the whole list
        # (and the key's allowance) when nobody reads any more.
        self._done: queue.Queue[tuple[T, V | None, BaseException | None]] = queue.Queue(maxsize=16 * threads)
        self._threads = [threading.Thread(target=self._fetch, name=f"{label}-{i}", daemon=True)
                         for i in range(min(threads, len(items)))]

    def __enter__(self) -> _Fetchers[T, V]:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def results(self) -> Iterator[tuple[T, V | None, BaseException | None]]:
        """(item, value, error) for every item, in completion order."""
        delivered = 0
        while delivered < self._count:
            try:
                result = self._done.get(timeout=1.0)  # a timeout, so that a signal is seen
            except queue.Empty:
                continue
            delivered += 1
            yield result

    def _fetch(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                item = next(self._items, _END)
            if item is _END:
                return
            try:
                result = (item, self._fetch_one(item), None)
            except BaseException as error:  # noqa: BLE001 - reported as the item's failure
                result = (item, None, error)
                if isinstance(error, FMPError) and error.stops_fetch:
                    self._stop.set()  # it would fail every item (a bad key): no more calls
            self._hand_over(result)

    def _hand_over(self, result: tuple[T, V | None, BaseException | None]) -> None:
        """Into the results, waiting while they are full, unless the fetch was stopped meanwhile."""
        while True:
            try:
                self._done.put(result, timeout=1.0)
                return
            except queue.Full:
                if self._stop.is_set():
                    return


class _ChunkCutter(Generic[T, V]):
    """Results gathered into chunks of the sizer's size, each timed for the sizer."""

    def __init__(self, summary: FetchSummary[T], sizer: ChunkSizer):
        self.summary, self.sizer = summary, sizer
        self.started = self.chunk_started = sizer.clock()
        self.results: list[tuple[T, V]] = []
        self.failures: list[ItemFailure[T]] = []

    def add(self, item: T, value: V | None, error: BaseException | None) -> None:
        if error is None:
            self.results.append((item, value))
        else:
            self.failures.append(ItemFailure(item, _describe(error)))

    def pending(self) -> int:
        return len(self.results) + len(self.failures)

    def full(self) -> bool:
        return self.pending() >= self.sizer.size

    def done(self) -> tuple[int, int]:
        return self.summary.succeeded + len(self.results), self.summary.failed + len(self.failures)

    def cut(self) -> Chunk:
        # The next chunk is timed from here: the workers go on fetching while
        # the caller writes this one.
        boundary = self.sizer.clock()
        summary = self.summary
        chunk = Chunk(len(summary.chunk_sizes), self.results, self.failures, boundary - self.chunk_started,
                      summary)
        summary.chunk_sizes.append(self.pending())
        summary.succeeded += len(self.results)
        summary.failures.extend(self.failures)
        summary.elapsed_s = boundary - self.started
        self.sizer.observe(self.pending(), chunk.elapsed_s)
        self.results, self.failures, self.chunk_started = [], [], boundary
        return chunk


_END: Any = object()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
