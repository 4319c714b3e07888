"""Simulator configuration and the live fault settings."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any, Callable

from .plans import get_plan


@dataclass
class Faults:
    """Injected faults; all off by default. Mutable at runtime (Python or
    ``POST /_sim/faults``); applied only to ``/stable/`` data paths."""

    latency_s: float = 0.0
    latency_jitter_s: float = 0.0  # uniform extra in [0, jitter]
    slow_tail_p: float = 0.0  # probability the latency is multiplied
    slow_tail_factor: float = 10.0
    slow_symbols: frozenset[str] = frozenset()  # requests naming one are slow
    slow_symbol_factor: float = 10.0
    error_rate: float = 0.0  # 500/502/503 at random
    stall_p: float = 0.0  # sleep stall_s, then answer normally
    stall_s: float = 30.0
    reset_p: float = 0.0  # drop the connection without a response
    truncate_p: float = 0.0  # send part of the body, then drop the connection
    malformed_p: float = 0.0  # 200 with a broken body
    limit_reach_p: float = 0.0  # 429 `Limit Reach` (no Retry-After) as if the minute were spent
    failing_symbols: frozenset[str] = frozenset()  # always 500 on per-symbol endpoints
    # Per-symbol endpoints answer 200 with one row that cannot be valid for these
    # (a price of "N/A", an ex-date of "", an IPO date of "soon"): rows a client must reject.
    invalid_row_symbols: frozenset[str] = frozenset()

    _SETS = ("slow_symbols", "failing_symbols", "invalid_row_symbols")

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = sorted(v) if isinstance(v, (set, frozenset)) else v
        return out

    def update(self, values: dict[str, Any]) -> None:
        """Set fields from a (JSON) mapping; unknown names raise ``KeyError``."""
        known = {f.name: f for f in fields(self)}
        for name, v in values.items():
            if name not in known:
                raise KeyError(name)
            if name in self._SETS:
                if isinstance(v, str):
                    v = [s for s in v.split(",") if s.strip()]
                v = frozenset(str(s).strip().upper() for s in (v or ()))
            else:
                v = float(v)
                if name.endswith("_p") or name == "error_rate":
                    if not 0.0 <= v <= 1.0:
                        raise ValueError(f"{name} must be within [0, 1]")
                elif v < 0:
                    raise ValueError(f"{name} must be >= 0")
            setattr(self, name, v)

    def reset(self) -> None:
        self.update({f.name: f.default for f in fields(self)})


@dataclass
class BadDays:
    """FMP's ordinary bad days (``fmp-api-facts.md``), each at a realistic rate, all on by
    default; ``BadDays.off()`` turns every one off. Deterministic: every draw is the
    counter-based hash of ``prices.py`` keyed on the seed (never ``random``, never wall time).
    Read when the ground truth is built (its tables are cached)."""

    # 1. An after-close quote is not the official end-of-day bar: for this share of
    #    (symbol, session) its price is a few basis points off the official close (a late
    #    print), and for this share its volume is a few percent short of the consolidated volume.
    quote_close_diff_p: float = 0.05
    quote_volume_short_p: float = 0.5
    # 2. Revisions: this share of (symbol, session) bars is corrected later (volume most
    #    often, the close sometimes, high/low kept consistent), visible once the bar's
    #    session + ``revision_lag_sessions`` sessions have closed.
    revision_p: float = 0.01
    revision_lag_sessions: int = 2
    revision_close_share: float = 0.3  # of revisions, those that correct the close (the rest: volume)
    # 3. company-screener: a page that is not the last answers fewer rows than `limit` at
    #    this rate per (session, query, page); a `limit` above the cap is served as the cap.
    short_page_p: float = 0.03
    screener_max_limit: int | None = 5000  # None: no cap
    # 4. A Special dividend on the same ex-date as this share of a payer's regular ones.
    special_dividend_p: float = 0.02
    # 5. The screener's lastAnnualDividend is null for this share of payers (a fixed set).
    null_last_dividend_p: float = 0.05
    # 6. This share of the seeded splits reaches splits / splits-calendar, and the history's
    #    adjustment, only once ``late_split_lag_sessions`` sessions after its ex-date closed.
    late_split_p: float = 0.3
    late_split_lag_sessions: int = 2
    # 7. Listed before trading: configured `listings` and this share of recent IPOs (moved to
    #    a first bar just after the clock) are in the screener ``pre_listing_sessions``
    #    sessions before their first bar; until then their history answers [].
    pre_listing_sessions: int = 3
    pre_listing_ipo_p: float = 0.002
    #    Listed symbols whose `profile` answers [] (a fixed set).
    empty_profile_p: float = 0.005

    _COUNTS = ("revision_lag_sessions", "late_split_lag_sessions", "pre_listing_sessions", "screener_max_limit")

    @classmethod
    def off(cls) -> "BadDays":
        """No bad day at all: every rate zero and no listing before trading. (The screener's
        `limit` cap stays: it is a fixed property of the endpoint, not a bad day.)"""
        return cls(**{f.name: 0.0 for f in fields(cls) if f.name.endswith("_p")},
                   pre_listing_sessions=0)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def update(self, values: dict[str, Any]) -> None:
        """Set fields from a mapping of names to values (strings allowed); unknown names raise ``KeyError``."""
        known = {f.name for f in fields(self)}
        for name, v in values.items():
            if name not in known:
                raise KeyError(name)
            if name in self._COUNTS:
                v = None if v is None or str(v).lower() in ("", "none") else int(v)
                if v is not None and v < 0:
                    raise ValueError(f"{name} must be >= 0")
            else:
                v = float(v)
                if not 0.0 <= v <= 1.0:
                    raise ValueError(f"{name} must be within [0, 1]")
            setattr(self, name, v)


@dataclass
class SimConfig:
    seed: int = 7
    n_symbols: int = 19205
    plan: str = "premium"
    api_keys: tuple[str, ...] = ("demo",)
    rate_limit_per_min: int | None = None  # None = the plan's
    bulk_min_interval_s: float = 20.0
    batch_quote_served: bool = True
    data_start: date = date(1990, 1, 2)
    now: datetime | date | Callable[[], datetime] | None = None  # None = real time (America/New_York)
    faults: Faults = field(default_factory=Faults)
    request_log_path: str | None = None
    profile_bulk_part_size: int = 5000
    fault_seed: int | None = None  # None = derived from seed
    # Splits: seeded ones at this rate (per symbol per week: ~4 a week across 19,205
    # symbols, forward and reverse), plus these (symbol, ex-date, numerator, denominator).
    split_rate_per_symbol_week: float = 4 / 19205
    # A configured split is on time unless a fifth element gives its lag in sessions
    # (a late split, as ``BadDays.late_split_p`` makes seeded ones).
    splits: tuple[tuple, ...] = ()
    # Delistings on known days (symbol, delisting date): the symbol leaves the
    # screener that day; its history up to the day before stays servable.
    delistings: tuple[tuple[str, date | str], ...] = ()
    # Renames on known days (old symbol, new symbol, date): from that day the company
    # trades, and its whole history is served, under the new symbol; the old answers [].
    renames: tuple[tuple[str, str, date | str], ...] = ()
    # New listings on known days (symbol, listing date): the symbol is not in the
    # screener before that day, and its history starts on it (an IPO).
    listings: tuple[tuple[str, date | str], ...] = ()
    # Reclassifications on known days (symbol, date, sector, industry): from that day
    # the screener and the profile both show the new sector and industry.
    sector_changes: tuple[tuple[str, date | str, str, str], ...] = ()
    # FMP's ordinary bad days (all on, at realistic rates); ``BadDays.off()`` for none.
    bad_days: BadDays = field(default_factory=BadDays)

    def __post_init__(self) -> None:
        self.plan = get_plan(self.plan).name  # validates
        self.api_keys = tuple(self.api_keys)
        if isinstance(self.api_keys, str):  # pragma: no cover - defensive
            self.api_keys = (self.api_keys,)

    @property
    def plan_obj(self):
        return get_plan(self.plan)

    @property
    def calls_per_min(self) -> int:
        return self.rate_limit_per_min if self.rate_limit_per_min is not None else self.plan_obj.calls_per_min
