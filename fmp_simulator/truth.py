"""Ground truth: exactly the rows the simulator's HTTP API serves, as Python
objects (camelCase dicts), computed without HTTP.

Methods answer "as served now" (the simulator's clock), consistent with the
routes. FMP's ordinary bad days (``BadDays``) change what is served; where the
served answer is not the final one, ``settled=True`` (or a dedicated method:
``revisions``, ``late_splits``, ``special_dividends``, ``null_payers``,
``empty_profiles``, ``pre_listings``, ``screener_page``, ``quote_differences``)
tells the settled truth."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Mapping

import numpy as np

from .calendar import Sessions, calendar_end_for, get_sessions, resolve_now
from .config import SimConfig
from .prices import (S_DIV, S_EMPTY_PROFILE, S_LATE_SPLIT, S_MISC, S_NULL_LAD, S_PAGE, S_PAGE_ROW, S_PAGE_SIZE,
                     S_PRELIST, S_PRELIST_DAY, S_QUOTE_PRICE, S_QUOTE_SIGN, S_QUOTE_SIZE, S_QUOTE_VOL,
                     S_QUOTE_VOL_SIZE, S_SPECIAL, S_SPECIAL_SIZE, PriceModel, normal, round_price, uniform)
from .universe import FREQ_NAME, Universe

EPOCH_ORD = date(1970, 1, 1).toordinal()
T_PLUS_ONE = date(2024, 5, 28).toordinal()
HISTORY_CAP = 5000
CALENDAR_CAP = 4000


class ExpFloat(float):
    """A float FMP writes in exponent form (``2.9909012e7``); equal to the float."""


def exp_str(v: float) -> str:
    s = np.format_float_scientific(float(v), unique=True, trim="-")
    mant, _, ex = s.partition("e")
    return f"{mant}e{int(ex)}"


def _weekday_fwd(o: np.ndarray) -> np.ndarray:
    wd = (o - 1) % 7  # date.fromordinal(1) is a Monday -> 0
    return o + np.where(wd == 5, 2, np.where(wd == 6, 1, 0))


def _weekday_back(o: np.ndarray) -> np.ndarray:
    wd = (o - 1) % 7
    return o - np.where(wd == 5, 1, np.where(wd == 6, 2, 0))


def _iso(o: np.ndarray) -> list[str]:
    return np.datetime_as_string((o - EPOCH_ORD).astype("datetime64[D]"), unit="D").tolist()


def _r(x, nd: int):
    return np.round(np.asarray(x, dtype=np.float64), nd)


@dataclass
class SplitTable:
    """Split events sorted by (symbol id, session): ratio = numerator / denominator."""

    sid: np.ndarray
    sess: np.ndarray  # session index of the ex-date
    num: np.ndarray
    den: np.ndarray
    lag: np.ndarray  # sessions after the ex-date before the split is served (0: on time; > 0: a late split)

    @property
    def log_ratio(self) -> np.ndarray:
        return np.log(self.num / self.den)

    def visible(self, L: int) -> np.ndarray:
        """Whether each split is served (listed, and applied to the history) at last close L."""
        return self.sess + self.lag <= L

    def of(self, sid: int) -> np.ndarray:
        """Row indices of one symbol's splits, oldest first."""
        lo, hi = np.searchsorted(self.sid, [sid, sid + 1])
        return np.arange(lo, hi)


# Split ratios drawn for seeded splits: (numerator, denominator), forward and reverse.
_SPLIT_RATIOS = ((2, 1), (3, 1), (3, 2), (4, 1), (1, 10), (1, 5), (1, 20))
_SPLIT_P = (0.45, 0.15, 0.1, 0.05, 0.12, 0.08, 0.05)


@dataclass
class DivTable:
    """Dividend events (ex-dates on sessions), sorted by (key, ex_sess)."""

    key: np.ndarray  # US symbol id, or n + foreign index
    ex: np.ndarray  # session index of the ex-date
    mon: np.ndarray  # month (since 1970) the event belongs to
    q: np.ndarray  # US: dividend / previous close; foreign: amount
    freq: np.ndarray
    by_date: np.ndarray | None  # argsort of ex (stable); None for the US-only table
    cum_log: np.ndarray  # cumsum of log(1-q) (US part), prefixed with 0
    n_us: int  # rows [0, n_us) are US


class GroundTruth:
    """Exactly the rows FMP (the simulator) would serve for ``config``."""

    def __init__(self, config: SimConfig | None = None):
        self.config = config or SimConfig()
        cfg = self.config
        now = resolve_now(cfg.now)
        self.cal: Sessions = get_sessions(cfg.data_start, calendar_end_for(now))
        l0 = max(self.cal.last_closed(now), 0)
        self.uni = Universe(cfg.seed, cfg.n_symbols, self.cal, l0)
        u = self.uni
        self.prices = PriceModel(cfg.seed, self.cal.n, u.base_lp, u.sigma, u.drift, u.vol_base)
        self._lock = threading.RLock()
        self._divs: DivTable | None = None
        self._divs_us: DivTable | None = None
        self._foreign_prices: PriceModel | None = None
        self._day_cache: OrderedDict = OrderedDict()
        self._snap_cache: OrderedDict = OrderedDict()
        self._splits: SplitTable | None = None
        self._first_names = list(self.uni.symbols)  # before any rename: what configs name
        self._first_index = dict(self.uni.index)
        self._first_sectors = (list(self.uni.sector), list(self.uni.industry))
        # bad days fixed per symbol (keyed on the symbol id, so renames keep them)
        bad = cfg.bad_days
        ids = np.arange(u.n)
        self.prices.revision_p = float(bad.revision_p)
        self.prices.revision_close_share = float(bad.revision_close_share)
        self._null_lad = u.payer & (uniform(cfg.seed, S_NULL_LAD, ids, 0 * ids) < bad.null_last_dividend_p)
        self._empty_profile = uniform(cfg.seed, S_EMPTY_PROFILE, ids, 0 * ids) < bad.empty_profile_p
        self._pre_listed = np.zeros(u.n, dtype=bool)  # in the screener before its first bar
        self._seed_pre_listings(l0)
        self._apply_listings()
        pre = max(0, int(bad.pre_listing_sessions or 0))
        self._screener_from = np.where(self._pre_listed, np.maximum(u.list_sess - pre, 0), u.list_sess)
        self._delisted: np.ndarray | None = None  # session of each symbol's delisting (n sessions: never)
        self._scale_at: int | None = None  # the last close the prices' split scale is for

    def warm(self) -> None:
        """Build the lazy caches (anchors, dividends, today's snapshot) ahead of use."""
        _ = self.prices.anchors
        _ = self.divs_us
        L = self.last_closed_index()
        if L >= 0:
            self._snapshot(L)
        _ = self.divs  # foreign listings + calendar table

    # ------------------------------------------------------------------ clock
    def now(self) -> datetime:
        return resolve_now(self.config.now)

    def last_closed_index(self, now: datetime | None = None) -> int:
        L = self.cal.last_closed(now or self.now())
        if now is None and L != self._scale_at:
            self._as_of(L)
        return L

    def last_closed_session(self) -> date:
        return self.cal.date(self.last_closed_index())

    def sessions_between(self, from_date: date, to_date: date) -> tuple[int, int]:
        """Session index range [lo, hi) within [from, to] and up to the last close."""
        lo = self.cal.on_or_after(from_date)
        hi = min(self.cal.on_or_before(to_date), self.last_closed_index()) + 1
        return lo, max(lo, hi)

    def sessions(self, from_date: date, to_date: date) -> list[date]:
        lo, hi = self.sessions_between(from_date, to_date)
        return [self.cal.date(i) for i in range(lo, hi)]

    # ----------------------------------------------------------------- splits
    @property
    def split_table(self) -> SplitTable:
        with self._lock:
            if self._splits is None:
                self._splits = self._build_splits()
            return self._splits

    def _build_splits(self) -> SplitTable:
        cfg, n, sessions = self.config, self.uni.n, self.cal.n
        rng = np.random.default_rng([cfg.seed, 11])
        count = rng.poisson(cfg.split_rate_per_symbol_week * n * sessions / 5)
        sid = rng.integers(0, max(n, 1), count)
        sess = rng.integers(1, max(sessions, 2), count)
        ratio = rng.choice(len(_SPLIT_RATIOS), size=count, p=_SPLIT_P)
        num = np.array([_SPLIT_RATIOS[r][0] for r in ratio], dtype=np.float64)
        den = np.array([_SPLIT_RATIOS[r][1] for r in ratio], dtype=np.float64)
        listed = sess > self.uni.list_sess[sid]  # a split needs a history before it
        sid, sess, num, den = sid[listed], sess[listed], num[listed], den[listed]
        bad = cfg.bad_days
        late = uniform(cfg.seed, S_LATE_SPLIT, sid, sess) < bad.late_split_p
        lag = np.where(late, max(0, int(bad.late_split_lag_sessions)), 0).astype(np.int64)
        for symbol, day, numerator, denominator, *late_lag in cfg.splits:
            i = self._config_id(symbol)
            if i is None:
                raise ValueError(f"split for unknown symbol {symbol!r}")
            day = date.fromisoformat(day) if isinstance(day, str) else day
            sid, sess = np.append(sid, i), np.append(sess, self.cal.on_or_after(day))
            num, den = np.append(num, float(numerator)), np.append(den, float(denominator))
            lag = np.append(lag, int(late_lag[0]) if late_lag else 0)  # configured: on time unless a lag is given
        order = np.lexsort((sess, sid))
        return SplitTable(sid[order].astype(np.int64), sess[order].astype(np.int64), num[order], den[order],
                          lag[order].astype(np.int64))

    def _as_of(self, L: int) -> None:
        """What FMP serves on the day of session L: names after the renames up to it, bars
        adjusted for every split up to it."""
        with self._lock:
            if self._scale_at == L:
                return
            self._apply_renames(L)
            self._apply_sector_changes(L)
            sp = self.split_table
            ahead = sp.sess > L
            log_scale = np.zeros(self.uni.n)
            np.add.at(log_scale, sp.sid[ahead], sp.log_ratio[ahead])
            self.prices.log_scale = log_scale
            # late splits past their ex-date whose adjustment has not reached the history yet
            pending = ~ahead & ~sp.visible(L)
            self.prices.pending_splits = tuple(
                (int(i), int(t), float(r)) for i, t, r in zip(sp.sid[pending], sp.sess[pending], sp.log_ratio[pending]))
            self.prices.revised_upto = L - max(0, int(self.config.bad_days.revision_lag_sessions))
            self._day_cache.clear()
            self._snap_cache.clear()
            self._scale_at = L

    def _config_id(self, symbol: str) -> int | None:
        return self._first_index.get(symbol)

    def _rename_table(self) -> list[tuple[int, int, str, str]]:
        """(symbol id, session, old, new) for the configured renames, by date; chains followed."""
        current = dict(self._first_index)
        out = []
        for old, new, day in sorted(self.config.renames, key=lambda r: str(r[2])):
            if old not in current:
                raise ValueError(f"rename of unknown symbol {old!r}")
            sid = current.pop(old)
            current[new] = sid
            when = self.cal.on_or_after(date.fromisoformat(day) if isinstance(day, str) else day)
            out.append((sid, when, old, new))
        return out

    def _apply_renames(self, L: int) -> None:
        names = list(self._first_names)
        for sid, when, _, new in self._rename_table():
            if when <= L:
                names[sid] = new
        self.uni.symbols[:] = names
        self.uni.index = {s: i for i, s in enumerate(names)}

    def _apply_listings(self) -> None:
        pre = int(self.config.bad_days.pre_listing_sessions or 0) > 0
        for symbol, day in self.config.listings:
            sid = self._config_id(symbol)
            if sid is None:
                raise ValueError(f"listing of unknown symbol {symbol!r}")
            when = self.cal.on_or_after(date.fromisoformat(day) if isinstance(day, str) else day)
            self.uni.list_sess[sid] = when
            self.uni.ipo_date[sid] = self.cal.iso[when]
            self._pre_listed[sid] = pre

    def _seed_pre_listings(self, l0: int) -> None:
        """A seeded share of the recent IPOs get their first bar just after the clock (within
        ``pre_listing_sessions``): listed in the screener, no bar yet."""
        bad = self.config.bad_days
        pre = int(bad.pre_listing_sessions or 0)
        if pre <= 0 or bad.pre_listing_ipo_p <= 0:
            return
        u, seed = self.uni, self.config.seed
        ids = np.arange(u.n)
        recent = (u.list_sess >= l0 - 255) & (u.list_sess > 0)  # the universe's recent IPOs (last year)
        picked = np.flatnonzero(recent & (uniform(seed, S_PRELIST, ids, 0 * ids) < bad.pre_listing_ipo_p))
        first = l0 + 1 + (uniform(seed, S_PRELIST_DAY, picked, 0 * picked) * pre).astype(np.int64)
        for sid, when in zip(picked.tolist(), first.tolist()):
            u.list_sess[sid] = when
            u.ipo_date[sid] = self.cal.iso[when]
            self._pre_listed[sid] = True

    def pre_listings(self) -> list[dict]:
        """Symbols listed before trading (configured listings and seeded IPOs), symbol order:
        ``screenerFrom`` (the first session it is in the screener), ``firstBar`` (its first
        session), ``trading`` (whether its first bar has closed: until then history is [])."""
        L = self.last_closed_index()
        u, iso = self.uni, self.cal.iso
        return [{"symbol": u.symbols[i], "screenerFrom": iso[int(self._screener_from[i])],
                 "firstBar": iso[int(u.list_sess[i])], "trading": bool(u.list_sess[i] <= L)}
                for i in sorted(np.flatnonzero(self._pre_listed).tolist(), key=lambda i: u.symbols[i])]

    def _apply_sector_changes(self, L: int) -> None:
        sectors, industries = (list(column) for column in self._first_sectors)
        for symbol, day, sector, industry in sorted(self.config.sector_changes, key=lambda c: str(c[1])):
            sid = self._config_id(symbol)
            if sid is None:
                raise ValueError(f"sector change of unknown symbol {symbol!r}")
            if self.cal.on_or_after(date.fromisoformat(day) if isinstance(day, str) else day) <= L:
                sectors[sid], industries[sid] = sector, industry
        self.uni.sector[:], self.uni.industry[:] = sectors, industries

    def symbol_changes(self) -> list[dict]:
        """symbol-change: renames up to the last close, newest first."""
        L = self.last_closed_index()
        rows = [{"date": self.cal.iso[when], "companyName": self.uni.name[sid], "oldSymbol": old, "newSymbol": new}
                for sid, when, old, new in self._rename_table() if when <= L]
        return rows[::-1]

    def _split_factor(self, sid: int, after: int, upto: int) -> float:
        """Product of the ratios of the splits served at last close ``upto`` with ex-date
        session in (after, upto] (a late split not yet served is not in the history either)."""
        sp = self.split_table
        rows = sp.of(sid)
        sel = rows[(sp.sess[rows] > after) & (sp.sess[rows] + sp.lag[rows] <= upto)]
        return float(np.prod(sp.num[sel] / sp.den[sel])) if len(sel) else 1.0

    def _split_rows(self, rows: np.ndarray) -> list[dict]:
        sp, iso = self.split_table, self.cal.iso
        return [{"symbol": self.uni.symbols[int(sp.sid[r])], "date": iso[int(sp.sess[r])],
                 "numerator": int(sp.num[r]), "denominator": int(sp.den[r])} for r in rows.tolist()]

    def splits(self, symbol: str, settled: bool = False) -> list[dict]:
        """splits?symbol= : the symbol's splits up to the last close, newest first; a late
        split only once served (``settled``: every split up to the last close)."""
        sid = self.symbol_id(symbol)
        if sid is None:
            return []
        L = self.last_closed_index()
        sp = self.split_table
        rows = sp.of(sid)
        shown = sp.sess[rows] <= L if settled else sp.visible(L)[rows]
        return self._split_rows(rows[shown][::-1])

    def splits_calendar(self, from_date: date, to_date: date, settled: bool = False) -> list[dict]:
        """splits-calendar?from&to : every symbol's splits with ex-date in [from, to], up to the last close
        (a late split only once served, unless ``settled``)."""
        lo, hi = self.sessions_between(from_date, to_date)
        sp = self.split_table
        shown = (sp.sess >= lo) & (sp.sess < hi)
        if not settled:
            shown &= sp.visible(self.last_closed_index())
        rows = np.flatnonzero(shown)
        return self._split_rows(rows[np.argsort(sp.sess[rows], kind="stable")][::-1])

    def late_splits(self) -> list[dict]:
        """Late splits with ex-date up to the last close, oldest first: the split row plus
        ``visibleFrom`` (the session at whose close it, and the history's adjustment for it,
        are served) and ``visible`` (served now)."""
        L = self.last_closed_index()
        sp = self.split_table
        rows = np.flatnonzero((sp.lag > 0) & (sp.sess <= L))
        rows = rows[np.argsort(sp.sess[rows], kind="stable")]
        out = self._split_rows(rows)
        for r, row in zip(rows.tolist(), out):
            when = int(sp.sess[r] + sp.lag[r])
            row["visibleFrom"] = self.cal.iso[when] if when < self.cal.n else None
            row["visible"] = when <= L
        return out

    def non_split_adjusted(self, symbol: str, from_date: date | None = None,
                           to_date: date | None = None) -> list[dict]:
        """historical-price-eod/non-split-adjusted: the bars as they traded (FMP names them adj*)."""
        L = self.last_closed_index()
        out = []
        for bar in self.eod_bars(symbol, from_date, to_date):
            t = self.cal.index_of(date.fromisoformat(bar["date"]))
            k = self._split_factor(self.symbol_id(symbol), t, L)
            out.append({"symbol": bar["symbol"], "date": bar["date"],
                        "adjOpen": float(round_price(np.array(bar["open"] * k))),
                        "adjHigh": float(round_price(np.array(bar["high"] * k))),
                        "adjLow": float(round_price(np.array(bar["low"] * k))),
                        "adjClose": float(round_price(np.array(bar["close"] * k))),
                        "volume": int(bar["volume"] / k)})
        return out

    def dividend_adjusted(self, symbol: str, from_date: date | None = None,
                          to_date: date | None = None) -> list[dict]:
        """historical-price-eod/dividend-adjusted: split-adjusted bars times the backward dividend factor.

        The factor of a bar is the product, over the dividends with ex-date
        after it, of (1 - dividend / the close of the session before the ex-date).
        """
        first = from_date - timedelta(days=10) if from_date else None  # the session before the first ex-date
        history = self.eod_bars(symbol, first, None)
        bars = [b for b in history if from_date is None or b["date"] >= from_date.isoformat()]
        if not bars:
            return []
        closes = {b["date"]: b["close"] for b in history}
        sessions = self.cal.iso
        events = []
        for row in self.dividends(symbol):
            t = self.cal.index_of(date.fromisoformat(row["date"]))
            prev = closes.get(sessions[t - 1]) if t else None
            if prev:
                events.append((row["date"], 1.0 - row["adjDividend"] / prev))
        out, factor, ahead = [], 1.0, sorted(events, reverse=True)
        for bar in bars:  # newest first: a dividend's factor applies to every bar before its ex-date
            while ahead and ahead[0][0] > bar["date"]:
                factor *= ahead.pop(0)[1]
            if to_date is None or bar["date"] <= to_date.isoformat():
                out.append({"symbol": bar["symbol"], "date": bar["date"], "adjOpen": bar["open"] * factor,
                            "adjHigh": bar["high"] * factor, "adjLow": bar["low"] * factor,
                            "adjClose": bar["close"] * factor, "volume": bar["volume"]})
        return out

    # ---------------------------------------------------------------- symbols
    def symbol_id(self, symbol: str) -> int | None:
        return self.uni.index.get(symbol)

    def is_listed(self, i: int, L: int | None = None) -> bool:
        """In the screener at last close L (a symbol listed before trading is, before its first bar)."""
        L = self.last_closed_index() if L is None else L
        return self._screener_from[i] <= L < self.delisted_sess[i]

    def symbols(self, exchange: str | None = None) -> list[str]:
        u = self.uni
        L = self.last_closed_index()
        ex = exchange.upper() if exchange else None
        return [s for i, s in enumerate(u.symbols) if self.is_listed(i, L) and (ex is None or u.exch_short[i] == ex)]

    @property
    def delisted_sess(self) -> np.ndarray:
        """Per symbol, the session it was delisted on (`cal.n`: never)."""
        with self._lock:
            if self._delisted is None:
                out = np.full(self.uni.n, self.cal.n, dtype=np.int64)
                for symbol, day in self.config.delistings:
                    i = self._config_id(symbol)
                    if i is None:
                        raise ValueError(f"delisting of unknown symbol {symbol!r}")
                    out[i] = self.cal.on_or_after(date.fromisoformat(day) if isinstance(day, str) else day)
                self._delisted = out
            return self._delisted

    def delisted_companies(self, page: int = 0, limit: int = 100) -> list[dict]:
        """delisted-companies: symbols delisted up to the last close, newest delisting first."""
        L = self.last_closed_index()
        gone = [i for i in np.argsort(-self.delisted_sess, kind="stable").tolist() if self.delisted_sess[i] <= L]
        u = self.uni
        rows = [{"symbol": u.symbols[i], "companyName": u.name[i], "exchange": str(u.exch_short[i]),
                 "ipoDate": u.ipo_date[i], "delistedDate": self.cal.iso[int(self.delisted_sess[i])]} for i in gone]
        return rows[page * limit:(page + 1) * limit]

    # ------------------------------------------------------------------ prices
    _BAR_KEYS = ("symbol", "date", "open", "high", "low", "close", "volume", "change", "changePercent", "vwap")

    def _bar_lists(self, sid: int, lo: int, hi: int, settled: bool = False):
        t = np.arange(hi - 1, lo - 1, -1, dtype=np.int64)
        b = self.prices.bars(np.full(len(t), sid), t, settled=settled)
        o, h, l, c, v = b["open"], b["high"], b["low"], b["close"], b["volume"]
        chg = _r(c - o, 4)
        chp = _r(np.where(o > 0, (c - o) / o * 100.0, 0.0), 5)
        vwap = _r((h + l + c) / 3.0, 4)
        iso = self.cal.iso
        dates = [iso[ti] for ti in t.tolist()]
        return dates, o.tolist(), h.tolist(), l.tolist(), c.tolist(), v.tolist(), chg.tolist(), chp.tolist(), vwap.tolist()

    def _bar_rows(self, sid: int, lo: int, hi: int, settled: bool = False) -> list[dict]:
        """historical-price-eod/full rows for session range [lo, hi), newest first."""
        if hi <= lo:
            return []
        sym = self.uni.symbols[sid]
        return [
            {"symbol": sym, "date": d, "open": oi, "high": hi_, "low": li, "close": ci, "volume": vi,
             "change": gi, "changePercent": pi, "vwap": wi}
            for d, oi, hi_, li, ci, vi, gi, pi, wi in zip(*self._bar_lists(sid, lo, hi, settled))
        ]

    def eod_bars_json(self, symbol: str, from_date: date | None = None, to_date: date | None = None) -> bytes:
        """The same rows as ``eod_bars``, encoded straight to JSON (fast path for HTTP)."""
        r = self.history_range(symbol, from_date, to_date)
        if r is None or r[2] <= r[1]:
            return b"[]"
        sid, lo, hi = r
        sym = self.uni.symbols[sid]
        head = '{"symbol":"' + sym + '","date":"'
        parts = [
            f'{head}{d}","open":{oi!r},"high":{hi_!r},"low":{li!r},"close":{ci!r},"volume":{vi},'
            f'"change":{gi!r},"changePercent":{pi!r},"vwap":{wi!r}}}'
            for d, oi, hi_, li, ci, vi, gi, pi, wi in zip(*self._bar_lists(sid, lo, hi))
        ]
        return ("[" + ",".join(parts) + "]").encode()

    def history_range(self, symbol: str, from_date: date | None, to_date: date | None) -> tuple[int, int, int] | None:
        """(symbol id, lo, hi) as historical-price-eod/full resolves them, or None for ``[]``."""
        sid = self.symbol_id(symbol)
        if sid is None:
            return None
        L = self.last_closed_index()
        if L < 0:
            return None
        last = self.cal.date(L)
        to_d = min(to_date, last) if to_date else last
        from_d = from_date if from_date else _years_before(to_date or last, 5)
        if from_date and to_date and from_date > to_date:
            return None
        plan = self.config.plan_obj
        if plan.history_years < 30:  # "30+ years" plans reach the whole data range
            from_d = max(from_d, _years_before(last, plan.history_years))
        lo = max(self.cal.on_or_after(from_d), int(self.uni.list_sess[sid]))
        hi = min(self.cal.on_or_before(to_d) + 1, int(self.delisted_sess[sid]))  # no bar from its delisting on
        if hi <= lo:
            return sid, lo, lo
        lo = max(lo, hi - HISTORY_CAP)  # cap drops the OLDEST rows
        return sid, lo, hi

    def eod_bars(self, symbol: str, from_date: date | None = None, to_date: date | None = None,
                 settled: bool = False) -> list[dict]:
        """historical-price-eod/full (flat, newest first, capped at 5,000 rows), as served now;
        ``settled``: the final bars (every revision made, every split up to now applied)."""
        r = self.history_range(symbol, from_date, to_date)
        return [] if r is None else self._bar_rows(*r, settled=settled)

    def bar(self, symbol: str, day: date, settled: bool = False) -> dict | None:
        """The official end-of-day bar of ``day`` as the history serves it now (``settled``: final)."""
        rows = self.eod_bars(symbol, day, day, settled)
        return rows[0] if rows else None

    def revisions(self, from_date: date | None = None, to_date: date | None = None,
                  symbol: str | None = None) -> list[dict]:
        """Revised bars of sessions in [from, to] up to the last close (default: the last 21
        sessions), by date then symbol: ``symbol, date, field`` ("volume" or "close"),
        ``before`` and ``after`` (open/high/low/close/volume in today's split units),
        ``visibleFrom`` (the session at whose close the revision is served) and ``visible``."""
        L = self.last_closed_index()
        if L < 0 or self.prices.revision_p <= 0:
            return []
        lo = self.cal.on_or_after(from_date) if from_date else max(0, L - 20)
        hi = min(self.cal.on_or_before(to_date), L) + 1 if to_date else L + 1
        if hi <= lo:
            return []
        u = self.uni
        ids = np.arange(u.n) if symbol is None else np.array([self.symbol_id(symbol)] if self.symbol_id(symbol) is not None else [], dtype=np.int64)
        t = np.arange(lo, hi, dtype=np.int64)
        I, T = np.meshgrid(ids, t, indexing="ij")
        I, T = I.ravel(), T.ravel()
        hit = self.prices.revision_mask(I, T) & (u.list_sess[I] <= T) & (T < self.delisted_sess[I])
        I, T = I[hit], T[hit]
        order = np.lexsort((I, T))
        I, T = I[order], T[order]
        before = self.prices.bars(I, T, revised=False)
        after = self.prices.bars(I, T, revised=True)
        lag = max(0, int(self.config.bad_days.revision_lag_sessions))
        keys = ("open", "high", "low", "close", "volume")
        out = []
        for k in range(len(I)):
            b = {f: before[f][k].item() for f in keys}
            a = {f: after[f][k].item() for f in keys}
            when = int(T[k]) + lag
            out.append({"symbol": u.symbols[int(I[k])], "date": self.cal.iso[int(T[k])],
                        "field": "close" if a["close"] != b["close"] else "volume", "before": b, "after": a,
                        "visibleFrom": self.cal.iso[when] if when < self.cal.n else None, "visible": when <= L})
        return out

    # ------------------------------------------------------------------ bulk
    def _foreign_model(self) -> PriceModel:
        if self._foreign_prices is None:
            f = self.uni.foreign
            m = len(f.bulk_ids)
            self._foreign_prices = PriceModel(self.config.seed + 7919, self.cal.n, f.base_lp, f.sigma, np.zeros(m), f.vol_base)
        return self._foreign_prices

    def _day_arrays(self, t: int) -> dict:
        """Vectorised bars of every listed US symbol on session t (cached, small LRU)."""
        with self._lock:
            hit = self._day_cache.get(t)
            if hit is not None:
                self._day_cache.move_to_end(t)
                return hit
        u = self.uni
        ids = np.flatnonzero((u.list_sess <= t) & (t < self.delisted_sess))
        b = self.prices.bars(ids, np.full(len(ids), t))
        b["ids"] = ids
        with self._lock:
            self._day_cache[t] = b
            while len(self._day_cache) > 8:
                self._day_cache.popitem(last=False)
        return b

    def bulk_rows(self, day: date, include_foreign: bool = True, settled: bool = False) -> list[tuple]:
        """eod-bulk rows as tuples (symbol, date, open, low, high, close, adjClose, volume)."""
        t = self.cal.index_of(day)
        L = self.last_closed_index()
        if t is None or t > L:
            return []
        if settled:
            u = self.uni
            ids = np.flatnonzero((u.list_sess <= t) & (t < self.delisted_sess))
            b = self.prices.bars(ids, np.full(len(ids), t), settled=True)
            b["ids"] = ids
        else:
            b = self._day_arrays(t)
        ids = b["ids"]
        u = self.uni
        adj = b["close"] * np.exp(self._adj_log(ids, t, L))
        adj = _r(adj, 4)
        iso = self.cal.iso[t]
        syms = u.symbols
        vols = b["volume"].tolist()
        vexp = u.volume_exp[ids].tolist()
        rows = [
            (syms[i], iso, o, lo, hi, c, a, ExpFloat(v) if e else v)
            for i, o, lo, hi, c, a, v, e in zip(ids.tolist(), b["open"].tolist(), b["low"].tolist(), b["high"].tolist(),
                                                 b["close"].tolist(), adj.tolist(), vols, vexp)
        ]
        if include_foreign:
            f = u.foreign
            fm = self._foreign_model()
            fid = f.bulk_ids
            loc = np.arange(len(fid))
            fb = fm.bars(loc, np.full(len(fid), t))
            raw = fm.close_raw(loc, np.full(len(fid), t))
            for k, j in enumerate(fid.tolist()):
                c = float(raw[k])
                if c < 0.01:  # tiny crypto prices: scientific notation, as FMP writes them
                    o = ExpFloat(float(f"{c * 1.003:.7g}")); lo = ExpFloat(float(f"{c * 0.99:.7g}"))
                    hi = ExpFloat(float(f"{c * 1.01:.7g}")); cc = ExpFloat(float(f"{c:.7g}"))
                    rows.append((f.symbols[j], iso, o, lo, hi, cc, cc, ExpFloat(float(fb["volume"][k]))))
                else:
                    rows.append((f.symbols[j], iso, float(fb["open"][k]), float(fb["low"][k]), float(fb["high"][k]),
                                 float(fb["close"][k]), float(fb["close"][k]), int(fb["volume"][k])))
        return rows

    def bulk_eod(self, day: date, settled: bool = False) -> list[dict]:
        """eod-bulk rows for US universe symbols only (dicts incl. adjClose), as served now
        (``settled``: every revision made, every split up to now applied)."""
        keys = ("symbol", "date", "open", "low", "high", "close", "adjClose", "volume")
        return [dict(zip(keys, r)) for r in self.bulk_rows(day, include_foreign=False, settled=settled)]

    # --------------------------------------------------------------- dividends
    @property
    def divs_us(self) -> DivTable:
        """US dividend events only (enough for adjClose, dividends, lastAnnualDividend)."""
        with self._lock:
            if self._divs_us is None:
                self._divs_us = self._build_divs_us()
            return self._divs_us

    @property
    def divs(self) -> DivTable:
        """US then foreign dividend events (the calendar's table); US rows keep their indices."""
        with self._lock:
            if self._divs is None:
                self._divs = self._build_divs()
            return self._divs

    def _events(self, keys, start_sess, freq, phase, dom):
        s = self.cal
        if len(keys) == 0:
            z = np.zeros(0, dtype=np.int64)
            return z, z, z, z
        sess_month = ((s.ords[start_sess] - EPOCH_ORD).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64))
        m_end = int(np.datetime64(date.fromordinal(int(s.ords[-1])), "M").astype(np.int64))
        period = 12 // freq
        # first month >= start month whose calendar month matches the schedule phase
        first = sess_month + np.mod(phase - np.mod(sess_month, 12) % period, period)
        counts = np.maximum((m_end - first) // period + 1, 0)
        total = int(counts.sum())
        rep = np.repeat(np.arange(len(keys)), counts)
        k = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        mon = first[rep] + k * period[rep]
        first_ord = mon.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) + EPOCH_ORD
        ex = s.first_on_or_after_ords(first_ord + dom[rep] - 1)
        ok = (ex >= start_sess[rep]) & (ex < s.n)
        rep, mon, ex = rep[ok], mon[ok], ex[ok]
        return keys[rep], ex, mon, rep

    def _build_divs_us(self) -> DivTable:
        u = self.uni
        pid = np.flatnonzero(u.payer)
        k1, ex1, mon1, _ = self._events(pid, u.div_start[pid], u.freq[pid], u.phase[pid], u.dom[pid])
        f1 = u.freq[k1]
        seed = self.config.seed
        q1 = (u.div_yield[k1] / f1) * np.exp(0.06 * normal(seed, S_DIV, k1, mon1))
        # bad days: a Special dividend (frequency code 0) on the ex-date of some regular ones
        sp = np.flatnonzero(uniform(seed, S_SPECIAL, k1, mon1) < self.config.bad_days.special_dividend_p)
        if len(sp):
            q_sp = q1[sp] * (0.5 + 3.5 * uniform(seed, S_SPECIAL_SIZE, k1[sp], mon1[sp]))
            k1, ex1, mon1 = (np.concatenate([a, a[sp]]) for a in (k1, ex1, mon1))
            q1, f1 = np.concatenate([q1, q_sp]), np.concatenate([f1, np.zeros(len(sp), dtype=f1.dtype)])
            order = np.lexsort((f1 == 0, ex1, k1))  # the regular row first, then the special
            k1, ex1, mon1, q1, f1 = k1[order], ex1[order], mon1[order], q1[order], f1[order]
        cum = np.concatenate([[0.0], np.cumsum(np.log1p(-np.clip(q1, 0, 0.5)))])
        return DivTable(k1, ex1, mon1, q1, f1, None, cum, len(k1))

    def _build_divs(self) -> DivTable:
        u = self.uni
        seed = self.config.seed
        us = self.divs_us
        k1, ex1, mon1, q1, f1 = us.key, us.ex, us.mon, us.q, us.freq
        # foreign payers
        f = u.foreign
        rng = np.random.default_rng([seed, 3])
        m = len(f.div_ids)
        ffreq = rng.choice([2, 1, 4], size=m, p=[0.45, 0.30, 0.25]).astype(np.int64)
        fphase = (rng.random(m) * (12 // ffreq)).astype(np.int64)
        fdom = rng.integers(1, 29, m)
        fstart = (rng.random(m) * max(1, self.uni.l0 - 300)).astype(np.int64)
        famt = np.exp(rng.normal(np.log(0.4), 1.0, m))
        fkeys = u.n + np.arange(m)
        k2, ex2, mon2, rep2 = self._events(fkeys, fstart, ffreq, fphase, fdom)
        q2 = np.round(famt[rep2] * np.exp(0.05 * normal(seed, S_DIV, k2, mon2)), 4).clip(0.0001)
        key = np.concatenate([k1, k2])
        ex = np.concatenate([ex1, ex2])
        mon = np.concatenate([mon1, mon2])
        q = np.concatenate([q1, q2])
        freq = np.concatenate([f1, ffreq[rep2]])
        return DivTable(key, ex, mon, q, freq, np.argsort(ex, kind="stable"), us.cum_log, len(k1))

    def _adj_log(self, ids: np.ndarray, t: int, L: int) -> np.ndarray:
        """Sum of log(1 - q) over each symbol's dividends with ex-date in (t, L]."""
        d = self.divs_us
        us_key = d.key[: d.n_us] * (1 << 20) + d.ex[: d.n_us]
        base = ids.astype(np.int64) * (1 << 20)
        hi = np.searchsorted(us_key, base + L, side="right")
        lo = np.searchsorted(us_key, base + t, side="right")
        return d.cum_log[hi] - d.cum_log[lo]

    def _div_rows(self, rows_idx: np.ndarray, d: DivTable | None = None) -> list[dict]:
        """Rows of the dividend table (given indices) as FMP dicts."""
        d = d if d is not None else self.divs
        u = self.uni
        if len(rows_idx) == 0:
            return []
        seed = self.config.seed
        key, ex, mon, q, freq = d.key[rows_idx], d.ex[rows_idx], d.mon[rows_idx], d.q[rows_idx], d.freq[rows_idx]
        us = rows_idx < d.n_us
        amount = q.copy()
        yld = np.zeros(len(rows_idx))
        if us.any():
            prev = round_price(self.prices.close_raw(key[us], np.maximum(ex[us] - 1, 0)))
            amt = np.maximum(np.round(q[us] * prev, 4), 0.0001)
            amount[us] = amt
            yld[us] = amt * np.maximum(freq[us], 1) / prev * 100.0  # a Special: its own share of the price
        fo = ~us
        if fo.any():
            yld[fo] = 0.5 + 5.5 * uniform(seed, S_MISC + 1, key[fo], mon[fo])
        yld = _r(yld, 2)
        h = uniform(seed, S_MISC, key, mon)
        ex_ord = self.cal.ords[ex]
        rec_ord = np.where(ex_ord >= T_PLUS_ONE, ex_ord, _weekday_fwd(ex_ord + 2))
        pay_ord = _weekday_fwd(rec_ord + 7 + (h * 28).astype(np.int64))
        dec_ord = _weekday_back(ex_ord - 14 - (h * 997 % 30).astype(np.int64))
        blank = (h * 7919 % 1.0) < np.where(us, 0.15, 0.5)
        ex_s, rec_s, pay_s, dec_s = _iso(ex_ord), _iso(rec_ord), _iso(pay_ord), _iso(dec_ord)
        fsyms = u.foreign.symbols if (~us).any() else None
        L = self.last_closed_index()
        split_ids = set(self.split_table.sid.tolist())
        out = []
        for k in range(len(rows_idx)):
            kk = int(key[k])
            sym = u.symbols[kk] if us[k] else fsyms[int(u.foreign.div_ids[kk - u.n])]
            a = float(amount[k])
            # As declared: in the shares of its day, before the splits that came after it.
            declared = round(a * self._split_factor(kk, int(ex[k]), L), 4) if us[k] and kk in split_ids else a
            out.append({
                "symbol": sym, "date": ex_s[k], "recordDate": rec_s[k], "paymentDate": pay_s[k],
                "declarationDate": "" if blank[k] else dec_s[k], "adjDividend": a, "dividend": declared,
                "yield": float(yld[k]), "frequency": FREQ_NAME[int(freq[k])],
            })
        return out

    def dividends(self, symbol: str) -> list[dict]:
        """dividends?symbol= : the full history up to the last close, newest first."""
        sid = self.symbol_id(symbol)
        if sid is None or not self.uni.payer[sid]:
            return []
        d = self.divs_us
        L = self.last_closed_index()
        us_key = d.key[: d.n_us]
        lo = int(np.searchsorted(us_key, sid, side="left"))
        hi = int(np.searchsorted(us_key, sid, side="right"))
        idx = np.arange(lo, hi)
        idx = idx[d.ex[idx] <= L][::-1]
        return self._div_rows(idx, d)

    def special_dividends(self, symbol: str | None = None) -> list[dict]:
        """The Special dividends served up to the last close (each shares its ex-date with a
        regular one, and both are served), newest first."""
        d = self.divs_us
        L = self.last_closed_index()
        sel = (d.freq[: d.n_us] == 0) & (d.ex[: d.n_us] <= L)
        if symbol is not None:
            sid = self.symbol_id(symbol)
            sel &= d.key[: d.n_us] == (-1 if sid is None else sid)
        idx = np.flatnonzero(sel)
        return self._div_rows(idx[np.lexsort((d.key[idx], -d.ex[idx]))], d)

    def _calendar_idx(self, from_date: date, to_date: date) -> np.ndarray:
        if from_date > to_date:
            return np.zeros(0, dtype=np.int64)
        lo_s, hi_s = self.sessions_between(from_date, to_date)
        d = self.divs
        exs = d.ex[d.by_date]
        a = int(np.searchsorted(exs, lo_s, side="left"))
        b = int(np.searchsorted(exs, hi_s - 1, side="right")) if hi_s > lo_s else a
        idx = d.by_date[a:b]
        # newest date first; within a date a fixed shuffled order
        tie = uniform(self.config.seed, S_MISC + 2, d.key[idx], d.ex[idx])
        order = np.lexsort((tie, -d.ex[idx]))
        return idx[order]

    def dividends_calendar(self, from_date: date, to_date: date) -> list[dict]:
        """Every dividend (US and foreign) with ex-date in [from, to], newest first, uncapped."""
        return self._div_rows(self._calendar_idx(from_date, to_date))

    def dividends_calendar_served(self, from_date: date, to_date: date, page: int = 0) -> list[dict]:
        """What the endpoint serves: the newest 4,000 rows (oldest dropped); ``page``
        re-sorts ties so rows duplicate and go missing where pages meet, as measured."""
        idx = self._calendar_idx(from_date, to_date)
        if page > 0:
            d = self.divs
            tie = uniform(self.config.seed + page, S_MISC + 2, d.key[idx], d.ex[idx])
            idx = idx[np.lexsort((tie, -d.ex[idx]))]
        return self._div_rows(idx[page * CALENDAR_CAP:(page + 1) * CALENDAR_CAP])

    # ------------------------------------------------------------ snapshots
    def _snapshot(self, L: int) -> dict:
        """Per-symbol values as of session L for every US symbol (cached per L)."""
        with self._lock:
            hit = self._snap_cache.get(L)
            if hit is not None:
                return hit
        u = self.uni
        n = u.n
        ids = np.arange(n)
        b = self.prices.bars(ids, np.full(n, L))
        prev_close = round_price(self.prices.close_raw(ids, np.full(n, max(L - 1, 0))))
        # 52-week range and moving averages from anchors (cheap, consistent everywhere)
        K = 21
        blocks = np.arange(max(0, (L - 252) // K + 1), L // K + 1)
        ap = self.prices.anchor_prices(ids, blocks) if len(blocks) else np.zeros((n, 0))
        c = b["close"]
        year_high = round_price(np.maximum(np.max(ap, axis=1, initial=0.0) * 1.01, b["high"]))
        year_low = round_price(np.minimum(np.min(ap, axis=1, initial=np.inf) * 0.99, b["low"]))
        year_low = np.maximum(year_low, np.where(c >= 1, 0.01, 0.0001))
        b50 = np.arange(max(0, (L - 50) // K + 1), L // K + 1)
        b200 = np.arange(max(0, (L - 200) // K + 1), L // K + 1)
        avg50 = _r((self.prices.anchor_prices(ids, b50).sum(axis=1) + c) / (len(b50) + 1), 4)
        avg200 = _r((self.prices.anchor_prices(ids, b200).sum(axis=1) + c) / (len(b200) + 1), 4)
        # dividends paid in the 365 days up to L
        lad = np.zeros(n)
        d = self.divs_us
        if d.n_us:
            L_ord = self.cal.ords[L]
            lo_s = self.cal.on_or_after(date.fromordinal(int(L_ord) - 364))
            sel = np.flatnonzero((d.ex[: d.n_us] >= lo_s) & (d.ex[: d.n_us] <= L))
            if len(sel):
                k = d.key[sel]
                prev = round_price(self.prices.close_raw(k, np.maximum(d.ex[sel] - 1, 0)))
                amt = np.maximum(np.round(d.q[sel] * prev, 4), 0.0001)
                lad = np.bincount(k, weights=amt, minlength=n)
        q_price, q_volume = self._after_close_quote(ids, L, c, b["volume"])
        snap = {
            "open": b["open"], "high": b["high"], "low": b["low"], "close": c, "volume": b["volume"],
            "q_price": q_price, "q_volume": q_volume,
            "q_high": np.maximum(b["high"], q_price), "q_low": np.minimum(b["low"], q_price),
            "prev_close": prev_close, "year_high": year_high, "year_low": year_low,
            "avg50": avg50, "avg200": avg200, "lad": _r(lad, 4),
            "avg_volume": np.floor(u.vol_base * np.exp(0.45 ** 2 / 2)).astype(np.int64),
        }
        with self._lock:
            self._snap_cache[L] = snap
            while len(self._snap_cache) > 4:
                self._snap_cache.popitem(last=False)
        return snap

    def _after_close_quote(self, ids: np.ndarray, L: int, close: np.ndarray, volume: np.ndarray):
        """(price, volume) of the quote after session L's close: not the official bar. For a
        share of (symbol, session) the last print is 1-8 bp (at least a tick) off the official
        close; for a share the volume is 0.5-5% short of the consolidated volume."""
        bad, seed = self.config.bad_days, self.config.seed
        price, vol = close, volume
        L = np.full(len(ids), L, dtype=np.int64)  # arrays: a 0-d operand makes numpy warn on the hash's wrap-around
        if bad.quote_close_diff_p > 0:
            hit = uniform(seed, S_QUOTE_PRICE, ids, L) < bad.quote_close_diff_p
            tick = np.where(close >= 1, 0.01, 0.0001)
            bp = 1.0 + 7.0 * uniform(seed, S_QUOTE_SIZE, ids, L)
            delta = np.maximum(tick, np.round(close * bp / 1e4 / tick) * tick)
            down = (uniform(seed, S_QUOTE_SIGN, ids, L) < 0.5) & (close - delta > 0)
            price = np.where(hit, round_price(np.where(down, close - delta, close + delta)), close)
        if bad.quote_volume_short_p > 0:
            hit = (uniform(seed, S_QUOTE_VOL, ids, L) < bad.quote_volume_short_p) & (volume > 0)
            short = np.floor(volume * (1.0 - (0.005 + 0.045 * uniform(seed, S_QUOTE_VOL_SIZE, ids, L)))).astype(np.int64)
            vol = np.where(hit, np.minimum(short, volume - 1), volume)
        return price, vol

    def quote_differences(self) -> list[dict]:
        """Symbols whose after-close quote (what batch-quote serves between the last close
        and the next open) differs from the official bar of the last closed session, symbol
        order: ``symbol, date, close`` (official), ``price`` (quote), ``volume`` (official),
        ``quoteVolume``."""
        L = self.last_closed_index()
        if L < 0:
            return []
        s = self._snapshot(L)
        u = self.uni
        ids = np.flatnonzero((u.list_sess <= L) & (L < self.delisted_sess)
                             & ((s["q_price"] != s["close"]) | (s["q_volume"] != s["volume"])))
        return sorted(({"symbol": u.symbols[i], "date": self.cal.iso[L], "close": float(s["close"][i]),
                        "price": float(s["q_price"][i]), "volume": int(s["volume"][i]),
                        "quoteVolume": int(s["q_volume"][i])} for i in ids.tolist()), key=lambda r: r["symbol"])

    def null_payers(self) -> list[dict]:
        """Listed payers whose screener lastAnnualDividend is null (a bad day), symbol order,
        with the value it stands for (``lastAnnualDividend``, the settled truth)."""
        L = self.last_closed_index()
        if L < 0:
            return []
        lad = self._snapshot(L)["lad"]
        u = self.uni
        return sorted(({"symbol": u.symbols[i], "lastAnnualDividend": float(lad[i])}
                       for i in np.flatnonzero(self._null_lad).tolist() if self.is_listed(i, L)),
                      key=lambda r: r["symbol"])

    def empty_profiles(self) -> list[str]:
        """Listed symbols whose ``profile`` answers [] (a fixed set; a bad day), sorted."""
        L = self.last_closed_index()
        return sorted(self.uni.symbols[i] for i in np.flatnonzero(self._empty_profile).tolist() if self.is_listed(i, L))

    def universe(self) -> list[dict]:
        """company-screener rows of every listed US symbol (symbol order)."""
        return self.screener_rows()

    def screener_rows(self) -> list[dict]:
        L = self.last_closed_index()
        if L < 0:
            return []
        u = self.uni
        s = self._snapshot(L)
        close, vol, lad = s["close"].tolist(), s["volume"].tolist(), s["lad"].tolist()
        mcap = (s["close"] * u.shares)
        out = []
        for i, sym in enumerate(u.symbols):
            if not self.is_listed(i, L):
                continue
            trading = u.list_sess[i] <= L  # listed before trading: no volume, no market cap yet
            mc = None if u.mcap_null[i] or not trading else (round(float(mcap[i]), 1) if u.mcap_frac[i] else int(mcap[i]))
            if mc is not None and u.mcap_frac[i]:
                mc = mc + 0.5 if mc == int(mc) else mc
            out.append({
                "symbol": sym, "companyName": u.name[i], "marketCap": mc, "sector": u.sector[i],
                "industry": u.industry[i], "beta": None if u.beta_null[i] else float(u.beta[i]),
                "price": close[i], "lastAnnualDividend": None if u.lad_null[i] or self._null_lad[i] else lad[i],
                "volume": (ExpFloat(vol[i]) if u.volume_exp[i] else vol[i]) if trading else 0, "exchange": u.exch_full[i],
                "exchangeShortName": str(u.exch_short[i]), "country": str(u.country[i]),
                "isEtf": bool(u.is_etf[i]), "isFund": False, "isActivelyTrading": True,
            })
        return out

    # --------------------------------------------------------------- screener
    def screener_query(self, params: Mapping[str, str]) -> list[dict]:
        """Every company-screener row the query matches (filters only), as served: marketCap desc."""
        exch = {e.strip().upper() for e in params.get("exchange", "").split(",") if e.strip()}
        country = {c.strip().upper() for c in params.get("country", "").split(",") if c.strip()}
        sector = params.get("sector")
        industry = params.get("industry")
        is_etf, is_fund = _bool_param(params.get("isEtf")), _bool_param(params.get("isFund"))
        active = _bool_param(params.get("isActivelyTrading"))
        all_classes = _bool_param(params.get("includeAllShareClasses"))
        mc_gt, mc_lt = _float_param(params.get("marketCapMoreThan")), _float_param(params.get("marketCapLowerThan"))
        div_gt, div_lt = _float_param(params.get("dividendMoreThan")), _float_param(params.get("dividendLowerThan"))
        px_gt, px_lt = _float_param(params.get("priceMoreThan")), _float_param(params.get("priceLowerThan"))
        vol_gt = _float_param(params.get("volumeMoreThan"))
        out = []
        for r in self.screener_rows():
            if exch and r["exchangeShortName"] not in exch:
                continue
            if country and r["country"] not in country:
                continue
            if sector and r["sector"] != sector or industry and r["industry"] != industry:
                continue
            if is_etf is not None and r["isEtf"] != is_etf or is_fund is not None and r["isFund"] != is_fund:
                continue
            if active is not None and r["isActivelyTrading"] != active:
                continue
            if all_classes is False and "-" in r["symbol"] and not r["symbol"].endswith("-A"):
                continue  # only when explicitly false: secondary share classes hidden
            mc = r["marketCap"]
            if mc_gt is not None and (mc is None or mc <= mc_gt) or mc_lt is not None and (mc is None or mc >= mc_lt):
                continue
            lad = r["lastAnnualDividend"]
            if div_gt is not None and (lad is None or lad <= div_gt) or div_lt is not None and (lad is None or lad >= div_lt):
                continue
            if px_gt is not None and r["price"] <= px_gt or px_lt is not None and r["price"] >= px_lt:
                continue
            if vol_gt is not None and r["volume"] <= vol_gt:
                continue
            out.append(r)
        out.sort(key=lambda r: -(r["marketCap"] or 0))
        return out

    def screener_limit(self, params: Mapping[str, str]) -> int:
        """The page size served: ``limit`` (default 1000), silently capped at ``screener_max_limit``.
        Raises ``ValueError`` for a non-integer limit."""
        limit = max(0, int(params.get("limit") or 1000))
        cap = self.config.bad_days.screener_max_limit
        return limit if cap is None else min(limit, int(cap))

    def screener_page(self, params: Mapping[str, str], _matched: list[dict] | None = None) -> dict:
        """company-screener as served for these query parameters: ``rows`` (the answer),
        ``dropped`` (symbols of the page's rows left out of a short page, in page order),
        ``limit`` (the page size served), ``page``, ``total`` (rows the query matches) and
        ``last`` (whether this page holds the last row). Pages are exactly as asked
        (rows [page*limit, (page+1)*limit) of the marketCap-desc order); past the end: [].
        A page that is not the last is short, at rate ``short_page_p`` keyed on (last close,
        query, page): 2-15% of its rows (at least one) are left out. Raises ``ValueError``
        for a non-integer limit or page."""
        limit = self.screener_limit(params)
        page = int(params.get("page") or 0)
        out = self.screener_query(params) if _matched is None else _matched
        start = page * limit
        rows = out[start:start + limit] if page >= 0 else []
        last = start + limit >= len(out)
        dropped: list[str] = []
        p = self.config.bad_days.short_page_p
        if rows and not last and p > 0:
            seed, L = self.config.seed, self.last_closed_index()
            qh = np.array([self._query_hash(params, limit)], dtype=np.int64)
            b = np.array([(L << 40) + (page << 20)], dtype=np.int64)
            if uniform(seed, S_PAGE, qh, b)[0] < p:
                share = 0.02 + 0.13 * uniform(seed, S_PAGE_SIZE, qh, b)[0]
                r = uniform(seed, S_PAGE_ROW, np.repeat(qh, len(rows)), b + np.arange(len(rows)))
                drop = r < share
                drop[int(np.argmin(r))] = True
                dropped = [row["symbol"] for row, d in zip(rows, drop.tolist()) if d]
                rows = [row for row, d in zip(rows, drop.tolist()) if not d]
        return {"rows": rows, "dropped": dropped, "limit": limit, "page": page, "total": len(out), "last": last}

    def screener(self, params: Mapping[str, str] | None = None) -> list[dict]:
        """The rows company-screener serves for these query parameters (see ``screener_page``)."""
        return self.screener_page(params or {})["rows"]

    def short_pages(self, params: Mapping[str, str] | None = None) -> dict[int, list[str]]:
        """For a query (``page`` ignored): each short page's number and the symbols it drops."""
        params = dict(params or {})
        limit = self.screener_limit(params)
        matched = self.screener_query(params)
        pages = (len(matched) + limit - 1) // limit if limit else 0
        out = {}
        for page in range(pages):
            dropped = self.screener_page({**params, "page": str(page)}, matched)["dropped"]
            if dropped:
                out[page] = dropped
        return out

    @staticmethod
    def _query_hash(params: Mapping[str, str], limit: int) -> int:
        """A stable 56-bit key of a screener query (its parameters but page and apikey; the served limit)."""
        items = sorted((k, str(v)) for k, v in params.items() if k not in ("page", "limit", "apikey"))
        text = "&".join(f"{k}={v}" for k, v in items) + f"&limit={limit}"
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=7).digest(), "little")

    # ------------------------------------------------------------------ quotes
    def quote(self, symbol: str) -> dict | None:
        """batch-quote row as served now (None for unknown symbols)."""
        rows = self.quotes([symbol])
        return rows[0] if rows else None

    def quotes(self, symbols: list[str]) -> list[dict]:
        u = self.uni
        now = self.now()
        L = self.last_closed_index(now)
        if L < 0:
            return []
        if L != self._scale_at:
            self._as_of(L)
        live = self.cal.in_session(now)
        s = self._snapshot(L)
        out = []
        for sym in symbols:
            i = u.index.get(sym)
            if i is None or u.list_sess[i] > (live if live is not None else L):
                continue
            if live is not None and live > L:  # the day so far (an IPO's first day too)
                b = self.prices.bars(np.array([i]), np.array([live]))
                o, h, lo, c, v = (float(b[k][0]) for k in ("open", "high", "low", "close", "volume"))
                ts = now.timestamp()
                f = min(1.0, max(0.0, (ts - self.cal.open_ts[live]) / (self.cal.close_ts[live] - self.cal.open_ts[live])))
                price = float(round_price(np.array([o + f * (c - o)]))[0])
                day_high = float(round_price(np.array([max(o, price) + f * (h - max(o, c))]))[0])
                day_low = float(round_price(np.array([min(o, price) - f * (min(o, c) - lo)]))[0])
                day_high, day_low = max(day_high, o, price), min(day_low, o, price)
                volume = int(v * f)
                prev = float(s["close"][i]) if u.list_sess[i] <= L else o  # no previous close before the first bar
                timestamp = int(ts)
            else:  # after the close: the last print and volume, not the official bar
                o, day_high, day_low, price = (float(s[k][i]) for k in ("open", "q_high", "q_low", "q_price"))
                volume = int(s["q_volume"][i])
                prev = float(s["prev_close"][i])
                timestamp = int(self.cal.close_ts[L])
            change = round(price - prev, 4)
            out.append({
                "symbol": sym, "name": u.name[i], "price": price,
                "changePercentage": round(change / prev * 100.0, 5) if prev else 0.0, "change": change,
                "volume": volume, "dayLow": day_low, "dayHigh": day_high,
                "yearHigh": max(float(s["year_high"][i]), day_high), "yearLow": min(float(s["year_low"][i]), day_low),
                "marketCap": int(price * u.shares[i]), "priceAvg50": float(s["avg50"][i]),
                "priceAvg200": float(s["avg200"][i]), "exchange": str(u.exch_short[i]), "open": o,
                "previousClose": prev, "timestamp": timestamp,
            })
        return out

    # ----------------------------------------------------------------- profiles
    def profile(self, symbol: str, settled: bool = False) -> dict | None:
        """profile?symbol= row (None, served as [], for unknown symbols, symbols without a bar
        yet and, unless ``settled``, the symbols of ``empty_profiles``)."""
        i = self.symbol_id(symbol)
        L = self.last_closed_index()
        if i is None or L < 0 or self.uni.list_sess[i] > L or (self._empty_profile[i] and not settled):
            return None
        return self._profile_row(i, self._snapshot(L))

    def _profile_row(self, i: int, s: dict) -> dict:
        u = self.uni
        price = float(s["close"][i])
        prev = float(s["prev_close"][i])
        change = round(price - prev, 4)
        mcap = price * float(u.shares[i])
        mcap = round(mcap, 2) + 0.25 if u.mcap_frac[i] else int(mcap)
        return {
            "symbol": u.symbols[i], "price": price, "marketCap": mcap,
            "beta": None if u.beta_null[i] else float(u.beta[i]), "lastDividend": float(s["lad"][i]),
            "range": f"{float(s['year_low'][i])}-{float(s['year_high'][i])}", "change": change,
            "changePercentage": round(change / prev * 100.0, 5) if prev else 0.0,
            "volume": int(s["volume"][i]), "averageVolume": int(s["avg_volume"][i]),
            "companyName": u.name[i], "currency": str(u.currency[i]), "cik": u.cik[i], "isin": u.isin[i],
            "cusip": u.cusip[i], "exchangeFullName": u.exch_full[i], "exchange": str(u.exch_short[i]),
            "industry": u.industry[i], "website": u.website(i), "description": u.description(i), "ceo": u.ceo[i],
            "sector": u.sector[i], "country": str(u.country[i]), "fullTimeEmployees": u.employees[i],
            "phone": u.phone[i], "address": u.address[i], "city": u.city[i], "state": u.state[i], "zip": u.zip[i],
            "image": f"https://images.financialmodelingprep.com/symbol/{u.symbols[i]}.png", "ipoDate": u.ipo_date[i],
            "defaultImage": False, "isEtf": bool(u.is_etf[i]), "isActivelyTrading": True,
            "isAdr": bool(u.is_adr[i]), "isFund": False,
        }

    def profile_bulk_rows(self) -> list[dict]:
        """Every profile profile-bulk serves (US listings that have traded, delisted ones with
        isActivelyTrading false, and foreign bulk listings), in the served (not symbol) order.
        Volumes are floats, as in FMP's CSV."""
        L = self.last_closed_index()
        if L < 0:
            return []
        s = self._snapshot(L)
        u = self.uni
        rows = []
        delisted = self.delisted_sess
        for i in range(u.n):
            if u.list_sess[i] <= L:
                r = self._profile_row(i, s)
                r["isActivelyTrading"] = bool(L < delisted[i])  # a delisted company's profile stays
                r["volume"] = float(r["volume"])
                r["averageVolume"] = float(r["averageVolume"])
                rows.append(r)
        f = u.foreign
        fm = self._foreign_model()
        fb = fm.bars(np.arange(len(f.bulk_ids)), np.full(len(f.bulk_ids), L))
        for k, j in enumerate(f.bulk_ids.tolist()):
            sym = f.symbols[j]
            price = float(fb["close"][k])
            crypto = sym.endswith("USD") and "." not in sym
            rows.append({
                "symbol": sym, "price": price, "marketCap": None if crypto else int(price * 5e8), "beta": None,
                "lastDividend": 0.0, "range": f"{price * 0.8:.2f}-{price * 1.2:.2f}", "change": 0.0,
                "changePercentage": 0.0, "volume": float(fb["volume"][k]), "averageVolume": float(fb["volume"][k]),
                "companyName": f.names[j], "currency": "USD" if crypto else "HKD" if sym.endswith(".HK") else "EUR",
                "cik": None, "isin": "", "cusip": "", "exchangeFullName": "CCC" if crypto else "Foreign",
                "exchange": "CRYPTO" if crypto else sym.rsplit(".", 1)[-1], "industry": "", "website": "",
                "description": "", "ceo": "", "sector": "", "country": "" if crypto else "HK",
                "fullTimeEmployees": "", "phone": "", "address": "", "city": "", "state": "", "zip": "",
                "image": f"https://images.financialmodelingprep.com/symbol/{sym}.png", "ipoDate": "",
                "defaultImage": True, "isEtf": False, "isActivelyTrading": True, "isAdr": False, "isFund": False,
            })
        order = np.argsort(uniform(self.config.seed, S_MISC + 3, np.arange(len(rows)), 0 * np.arange(len(rows))))
        return [rows[k] for k in order.tolist()]

    def profile_bulk_part(self, part: int) -> list[dict] | None:
        """Rows of ``profile-bulk?part=N`` (None past the end)."""
        rows = self._profile_bulk_cached()
        size = max(1, int(self.config.profile_bulk_part_size))
        if part < 0 or part * size >= len(rows):
            return None
        return rows[part * size:(part + 1) * size]

    def _profile_bulk_cached(self) -> list[dict]:
        L = self.last_closed_index()
        with self._lock:
            hit = getattr(self, "_pb_cache", None)
            if hit and hit[0] == L:
                return hit[1]
        rows = self.profile_bulk_rows()
        with self._lock:
            self._pb_cache = (L, rows)
        return rows

    # --------------------------------------------------------------- stock-list
    def stock_list(self) -> list[dict]:
        u = self.uni
        f = u.foreign
        rows = [{"symbol": s, "companyName": n} for s, n in zip(u.symbols, u.name)]
        rows += [{"symbol": s, "companyName": n} for s, n in zip(f.symbols, f.names)]
        return rows


def _bool_param(raw: str | None) -> bool | None:
    if raw is None or raw == "":
        return None
    return raw.strip().lower() in ("true", "1", "yes")


def _float_param(raw: str | None) -> float | None:
    try:
        return None if raw in (None, "") else float(raw)
    except ValueError:
        return None


def _years_before(d: date, years: int) -> date:
    try:
        return d.replace(year=d.year - years)
    except ValueError:  # Feb 29
        return d.replace(year=d.year - years, day=28)
