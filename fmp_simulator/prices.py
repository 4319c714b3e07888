"""Deterministic, random-access price model.

Every value is a pure function of ``(seed, symbol id, session index)`` through a
counter-based hash (splitmix64), so any bar can be computed directly, for one
symbol over a range or for every symbol on one day, without generating history
first. A past bar never changes as time advances, except as FMP's do: by a
split. ``log_scale`` (per symbol, set by the ground truth for its clock) is
the log of the splits still ahead of the clock, so every bar is adjusted for
the splits up to "now", as `historical-price-eod/full` is.

Model, in log-price ``x`` per symbol:
* anchors every ``K`` sessions form a random walk (block increments drawn from the
  hash of ``(symbol, block)``); the anchor matrix (symbols x blocks, ~70 MB at
  19,205 symbols) is the only cached state;
* between two anchors a Brownian bridge of daily hashed shocks;
* the walk is folded (reflected) into ``[-R, R]`` around a per-symbol base level
  so prices stay in a plausible band without losing volatility; always positive.
Bars: close = exp(level), open = previous close times a small gap, high/low
beyond max/min(open, close); rounded to cents (1/100 of a cent below $1), then
``low <= open, close <= high`` is enforced.

Two of FMP's ordinary bad days live here, both set by the ground truth for its clock:
* ``pending_splits``: late splits whose adjustment has not reached the history yet; a
  bar before such a split's ex-date is still in the old units (the scale is per row);
* revisions: a bar of session ``t`` is corrected (volume, or close with high/low kept
  consistent) at rate ``revision_p``, keyed on (symbol, session); it is served corrected
  once ``t <= revised_upto``.
``settled=True`` asks for the final truth: every split up to the clock applied and every
revision made.
"""

from __future__ import annotations

import threading

import numpy as np

K = 21  # sessions per anchor block
SQUASH_R = 2.5

_U = np.uint64
_C1 = _U(0xBF58476D1CE4E5B9)
_C2 = _U(0x94D049BB133111EB)
_G = _U(0x9E3779B97F4A7C15)
_KA = _U(0xD6E8FEB86659FD93)
_KB = _U(0xA0761D6478BD642F)
_KS = _U(0xE7037ED1A0B428DB)

# stream ids
S_ANCHOR, S_DAY, S_GAP, S_HIGH, S_LOW, S_VOL, S_DIV, S_MISC = range(1, 9)  # S_MISC+1..+3 are taken
# bad days (fmp-api-facts.md, "Ordinary bad days"): one stream per draw
S_REV, S_REV_KIND, S_REV_SIZE, S_REV_SIGN = 20, 21, 22, 23
S_QUOTE_PRICE, S_QUOTE_VOL, S_QUOTE_SIZE, S_QUOTE_SIGN = 24, 25, 26, 27
S_PAGE, S_PAGE_ROW, S_PAGE_SIZE = 28, 29, 30
S_SPECIAL, S_SPECIAL_SIZE = 31, 32
S_LATE_SPLIT, S_NULL_LAD, S_EMPTY_PROFILE, S_PRELIST, S_PRELIST_DAY, S_QUOTE_VOL_SIZE = 33, 34, 35, 36, 37, 38


def _mix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> _U(30))
    x = x * _C1
    x = x ^ (x >> _U(27))
    x = x * _C2
    return x ^ (x >> _U(31))


def hash_u64(seed: int, stream: int, a, b) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64).astype(np.uint64)
    b = np.asarray(b, dtype=np.int64).astype(np.uint64)
    base = _mix(np.array([(seed * 0x2545F491 + stream * 0x51ED27) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    x = (a * _KA) ^ _mix(b * _KB + _G) ^ (base * _KS)  # 1-element array: wraps silently
    return _mix(x + _G)


def uniform(seed: int, stream: int, a, b) -> np.ndarray:
    h = hash_u64(seed, stream, a, b)
    return ((h >> _U(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)


def normal(seed: int, stream: int, a, b) -> np.ndarray:
    h = hash_u64(seed, stream, a, b)
    u1 = ((h >> _U(32)).astype(np.float64) + 0.5) * (1.0 / 4294967296.0)
    u2 = (h & _U(0xFFFFFFFF)).astype(np.float64) * (1.0 / 4294967296.0)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def fold(x: np.ndarray, r: float = SQUASH_R) -> np.ndarray:
    """Reflect x into [-r, r] (a triangle wave): bounded, slope +-1 everywhere."""
    return r - np.abs(np.mod(x + r, 4.0 * r) - 2.0 * r)


def round_price(x: np.ndarray) -> np.ndarray:
    """Cents at or above $1, 1/100 cent below (as FMP shows penny stocks)."""
    cents = np.round(x * 100.0) / 100.0
    fine = np.round(x * 10000.0) / 10000.0
    return np.where(x >= 1.0, cents, fine)


class PriceModel:
    """Bars for symbol ids ``0..n-1`` with per-symbol parameters.

    ``base_lp``: log price level; ``sigma``: daily volatility; ``drift``: per-block
    drift; ``vol_base``: typical daily volume.
    """

    def __init__(self, seed: int, n_sessions: int, base_lp, sigma, drift, vol_base):
        self.seed = seed
        self.n_sessions = n_sessions
        self.n_blocks = n_sessions // K + 2
        self.base_lp = np.asarray(base_lp, dtype=np.float64)
        self.sigma = np.asarray(sigma, dtype=np.float64)
        self.drift = np.asarray(drift, dtype=np.float64)
        self.vol_base = np.asarray(vol_base, dtype=np.float64)
        self._anchors: np.ndarray | None = None
        self._lock = threading.Lock()
        self.log_scale: np.ndarray | None = None  # log of the splits after "now", per symbol
        # (symbol id, ex-date session, log ratio) of late splits not yet in the history
        self.pending_splits: tuple[tuple[int, int, float], ...] = ()
        self.revision_p = 0.0
        self.revision_close_share = 0.0
        self.revised_upto = -1  # bars of sessions up to this one are served revised

    # -- anchors ----------------------------------------------------------
    def _anchor_rows(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        blocks = np.arange(1, self.n_blocks, dtype=np.int64)
        z = normal(self.seed, S_ANCHOR, ids[:, None], blocks[None, :])
        step = z * (self.sigma[ids] * np.sqrt(K))[:, None] + self.drift[ids][:, None]
        out = np.zeros((len(ids), self.n_blocks), dtype=np.float64)
        np.cumsum(step, axis=1, out=out[:, 1:])
        return out

    @property
    def anchors(self) -> np.ndarray:
        if self._anchors is not None:
            return self._anchors
        with self._lock:
            if self._anchors is not None:
                return self._anchors
            n = len(self.base_lp)
            parts = [self._anchor_rows(np.arange(s, min(n, s + 2048))) for s in range(0, n, 2048)]
            self._anchors = np.concatenate(parts, axis=0) if parts else np.zeros((0, self.n_blocks))
            return self._anchors

    # -- levels -------------------------------------------------------------
    def _walk(self, ids: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Unsquashed walk value for each (id, session) pair."""
        A = self.anchors
        b = t // K
        j = t % K
        a0 = A[ids, b]
        a1 = A[ids, b + 1]
        steps = np.arange(1, K + 1, dtype=np.int64)
        z = normal(self.seed, S_DAY, ids[:, None], (b * K)[:, None] + steps[None, :])
        w = np.cumsum(z, axis=1)
        wk = w[:, -1]
        wj = np.where(j > 0, w[np.arange(len(ids)), np.maximum(j - 1, 0)], 0.0)
        frac = j / K
        return a0 + frac * (a1 - a0) + self.sigma[ids] * (wj - frac * wk)

    def log_close(self, ids, t, settled: bool = False) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        t = np.asarray(t, dtype=np.int64)
        x = self._walk(ids, t)
        return self.base_lp[ids] + fold(x) + self._row_scale(ids, t, settled)

    def _scale(self, ids: np.ndarray) -> np.ndarray | float:
        return 0.0 if self.log_scale is None else self.log_scale[ids]

    def _row_scale(self, ids: np.ndarray, t: np.ndarray, settled: bool = False) -> np.ndarray | float:
        """The log scale of each (id, session) row: the splits after "now", plus (unless
        ``settled``) the late splits not yet applied, for the rows before their ex-date."""
        s = self._scale(ids)
        pending = () if settled else self.pending_splits
        if not pending:
            return s
        s = np.array(np.broadcast_to(s, np.broadcast(ids, t).shape), dtype=np.float64)
        for sid, sess, log_ratio in pending:
            s += np.where((ids == sid) & (t < sess), log_ratio, 0.0)
        return s

    def close_raw(self, ids, t, settled: bool = False) -> np.ndarray:
        return np.exp(self.log_close(ids, t, settled))

    def bars(self, ids, t, settled: bool = False, revised: bool | None = None) -> dict[str, np.ndarray]:
        """OHLCV for each (id, session) pair, rounded, invariants enforced.

        As served now by default; ``settled``: the final truth (every split up to now
        applied, every revision made). ``revised`` overrides the revisions alone
        (True: all made, False: none)."""
        ids = np.asarray(ids, dtype=np.int64)
        t = np.asarray(t, dtype=np.int64)
        scale = self._row_scale(ids, t, settled)
        c = np.exp(self.base_lp[ids] + fold(self._walk(ids, t)) + scale)
        # the previous close in the units of this row (a late split's ex-date opens in the new units)
        prev = np.exp(self.base_lp[ids] + fold(self._walk(ids, np.maximum(t - 1, 0))) + scale)
        sd = self.sigma[ids]
        o = prev * np.exp(0.35 * sd * normal(self.seed, S_GAP, ids, t))
        hi = np.maximum(o, c) * np.exp(0.6 * sd * np.abs(normal(self.seed, S_HIGH, ids, t)))
        lo = np.minimum(o, c) * np.exp(-0.6 * sd * np.abs(normal(self.seed, S_LOW, ids, t)))
        vol = np.floor(self.vol_base[ids] * np.exp(0.45 * normal(self.seed, S_VOL, ids, t) - scale))
        o, c, hi, lo = round_price(o), round_price(c), round_price(hi), round_price(lo)
        hi = np.maximum(hi, np.maximum(o, c))
        lo = np.minimum(lo, np.minimum(o, c))
        lo = np.where(lo <= 0, np.where(c >= 1, 0.01, 0.0001), lo)
        out = {"open": o, "high": hi, "low": lo, "close": c, "volume": vol.astype(np.int64)}
        if revised is None:
            revised = True if settled else None
        if self.revision_p > 0 and revised is not False:
            self._revise(ids, t, out, np.iinfo(np.int64).max if revised else self.revised_upto)
        return out

    # -- revisions (bad days) ------------------------------------------------
    def revision_mask(self, ids, t) -> np.ndarray:
        """Whether each (id, session) bar is ever revised."""
        return uniform(self.seed, S_REV, ids, t) < self.revision_p

    def _revise(self, ids: np.ndarray, t: np.ndarray, b: dict, upto: int) -> None:
        """Apply, in place, the revisions of the rows with session <= upto. Volume (most
        often): -12%..-3% or +3%..+25%; close: +-0.1%..1% (at least a tick), high and
        low widened to keep it inside."""
        ids, t = np.broadcast_arrays(ids, t)
        hit = (t <= upto) & self.revision_mask(ids, t)
        if not hit.any():
            return
        k = np.flatnonzero(hit)
        i, tk = ids[k], t[k]
        on_close = uniform(self.seed, S_REV_KIND, i, tk) < self.revision_close_share
        size = uniform(self.seed, S_REV_SIZE, i, tk)
        sign = np.where(uniform(self.seed, S_REV_SIGN, i, tk) < 0.5, -1.0, 1.0)
        v = b["volume"][k]
        f = np.where(size < 0.3, 0.88 + 0.09 * size / 0.3, 1.03 + 0.22 * (size - 0.3) / 0.7)
        nv = np.floor(v * f).astype(np.int64)
        nv = np.where(nv == v, v + 1, nv)
        c = b["close"][k]
        nc = round_price(c * (1.0 + sign * (0.001 + 0.009 * size)))
        nc = np.where(nc == c, round_price(c + np.where(c >= 1, 0.01, 0.0001)), nc)
        b["volume"][k] = np.where(on_close, v, nv)
        b["close"][k] = np.where(on_close, nc, c)
        b["high"][k] = np.maximum(b["high"][k], b["close"][k])
        b["low"][k] = np.minimum(b["low"][k], b["close"][k])

    def anchor_prices(self, ids, blocks) -> np.ndarray:
        """Close-level at anchor boundaries (cheap stand-in for 52-week stats)."""
        ids = np.asarray(ids, dtype=np.int64)
        blocks = np.asarray(blocks, dtype=np.int64)
        x = self.anchors[ids[:, None], blocks[None, :]] if blocks.ndim == 1 else self.anchors[ids, blocks]
        scale = self._scale(ids)
        return np.exp(self.base_lp[ids][:, None] + fold(x) + (scale[:, None] if np.ndim(scale) else scale))
