"""The simulated universe: US symbols with static profile data, listing dates and
dividend schedules, plus a lazily built set of foreign listings, funds and crypto
(for ``stock-list``, ``eod-bulk`` and ``dividends-calendar`` rows outside the US
universe). Everything is drawn from ``numpy.random.default_rng(seed)`` in a fixed
order, so the same seed and symbol count give the same universe."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from .calendar import Sessions

LETTERS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
# ticker-ish letter weights (consonant heavy, few Q/X/Z)
_LW = np.array([8, 4, 6, 4, 6, 3, 4, 3, 5, 2, 3, 5, 5, 5, 4, 5, 1, 5, 7, 6, 3, 3, 2, 1.5, 1.5, 1], dtype=float)
_LW /= _LW.sum()

SECTORS = {
    "Technology": ["Software - Application", "Software - Infrastructure", "Semiconductors", "Consumer Electronics", "Information Technology Services", "Communication Equipment"],
    "Healthcare": ["Biotechnology", "Drug Manufacturers - General", "Medical Devices", "Diagnostics & Research", "Healthcare Plans"],
    "Financial Services": ["Banks - Regional", "Asset Management", "Insurance - Property & Casualty", "Capital Markets", "Credit Services"],
    "Consumer Cyclical": ["Specialty Retail", "Auto Parts", "Restaurants", "Apparel Retail", "Travel Services"],
    "Industrials": ["Aerospace & Defense", "Specialty Industrial Machinery", "Engineering & Construction", "Trucking", "Railroads"],
    "Communication Services": ["Internet Content & Information", "Telecom Services", "Entertainment", "Advertising Agencies"],
    "Consumer Defensive": ["Packaged Foods", "Beverages - Non-Alcoholic", "Household & Personal Products", "Grocery Stores"],
    "Energy": ["Oil & Gas E&P", "Oil & Gas Midstream", "Oil & Gas Equipment & Services", "Uranium"],
    "Basic Materials": ["Specialty Chemicals", "Gold", "Steel", "Agricultural Inputs"],
    "Real Estate": ["REIT - Residential", "REIT - Industrial", "REIT - Retail", "Real Estate Services"],
    "Utilities": ["Utilities - Regulated Electric", "Utilities - Renewable", "Utilities - Regulated Water"],
}
SECTOR_NAMES = list(SECTORS)
_SECTOR_P = np.array([18, 17, 16, 10, 10, 5, 5, 6, 5, 5, 3], dtype=float)
_SECTOR_P /= _SECTOR_P.sum()
_SECTOR_WORD = {
    "Technology": ["Technologies", "Systems", "Software", "Networks", "Digital", "Semiconductor"],
    "Healthcare": ["Therapeutics", "Pharmaceuticals", "Biosciences", "Medical", "Health"],
    "Financial Services": ["Bancorp", "Financial", "Capital", "Bancshares", "Holdings"],
    "Consumer Cyclical": ["Brands", "Stores", "Motors", "Apparel", "Resorts"],
    "Industrials": ["Industries", "Aerospace", "Logistics", "Manufacturing", "Machinery"],
    "Communication Services": ["Media", "Communications", "Interactive", "Telecom"],
    "Consumer Defensive": ["Foods", "Beverage", "Consumer Products", "Farms"],
    "Energy": ["Energy", "Petroleum", "Resources", "Midstream"],
    "Basic Materials": ["Materials", "Chemicals", "Mining", "Steel"],
    "Real Estate": ["Realty", "Properties", "Residential REIT", "Land"],
    "Utilities": ["Utilities", "Power", "Electric", "Water"],
}
_SYL1 = ["Al", "Bri", "Cor", "Dex", "Ev", "Fal", "Gen", "Hal", "Ion", "Jet", "Kin", "Lum", "Mar", "Nov", "Or", "Pax", "Quan", "Ros", "Syn", "Tor", "Ul", "Ver", "Wes", "Xen", "Yor", "Zen", "Ap", "Bel", "Cas", "Del", "Ell", "Fron", "Gran", "Hel", "Ir", "Ka", "Lan", "Mer", "Nor", "Oak", "Pin", "Red", "Sum", "Tri", "Uni", "Val", "Wil"]
_SYL2 = ["a", "o", "ex", "ia", "on", "is", "ar", "um", "ent", "ix", "ora", "ium", "ton", "ridge", "way", "stone", "field", "mark", "point", "view", "gate", "crest"]
_SUFFIX = [" Inc.", " Corp.", " Corporation", " Holdings, Inc.", " Ltd.", " plc", " Co.", ", Inc.", " Group, Inc."]
_ETF_ISSUERS = ["iShares", "Vanguard", "SPDR", "Invesco", "Global X", "First Trust", "ProShares", "Schwab", "WisdomTree", "VanEck", "Direxion", "JPMorgan"]
_ETF_THEMES = ["Core S&P 500", "Total Bond Market", "Russell 2000", "MSCI Emerging Markets", "High Dividend Yield", "Clean Energy", "Semiconductor", "Short-Term Treasury", "Small-Cap Value", "Nasdaq-100", "Gold Miners", "Real Estate", "Dividend Appreciation", "International Equity", "Ultra Short Income", "Robotics & AI", "Healthcare Select", "Momentum Factor"]
_FIRST = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth", "William", "Susan", "Richard", "Karen", "Thomas", "Lisa", "Daniel", "Nancy", "Mark", "Sandra", "Wei", "Priya", "Carlos", "Ana"]
_LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez", "Hernandez", "Lopez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Chen", "Patel", "Kim", "Nguyen"]
_CITIES = [("New York", "NY", "100"), ("San Jose", "CA", "951"), ("Boston", "MA", "021"), ("Chicago", "IL", "606"), ("Houston", "TX", "770"), ("Austin", "TX", "787"), ("Seattle", "WA", "981"), ("Atlanta", "GA", "303"), ("Denver", "CO", "802"), ("Miami", "FL", "331"), ("Minneapolis", "MN", "554"), ("Charlotte", "NC", "282"), ("San Diego", "CA", "921"), ("Columbus", "OH", "432"), ("Phoenix", "AZ", "850")]
_AREA = ["212", "408", "617", "312", "713", "512", "206", "404", "303", "305", "612", "704", "858", "614", "602"]
_STREETS = ["Main Street", "Park Avenue", "Market Street", "Technology Drive", "Commerce Way", "Innovation Blvd", "Corporate Center Drive", "Pine Street", "Harbor Road"]
_COUNTRIES = ["CN", "GB", "IL", "CA", "NL", "IE", "BM", "KY", "JP", "BR", "DE", "CH"]

FREQ_NAME = {0: "Special", 1: "Annual", 2: "Semi-Annual", 4: "Quarterly", 12: "Monthly"}  # 0: a one-off (bad days)

NASDAQ_VENUES = ["NASDAQ Global Select", "NASDAQ Global Market", "NASDAQ Capital Market"]


class _Draw:
    """Fast scalar draws from pre-generated batches (numpy scalar calls are slow)."""

    def __init__(self, rng, size: int):
        self.rng = rng
        self.size = max(1024, size)
        self._refill()

    def _refill(self) -> None:
        self.letters = "".join(LETTERS[self.rng.choice(26, size=self.size * 5, p=_LW)])
        self.lp = 0
        self.u = self.rng.random(self.size * 8).tolist()
        self.up = 0

    def ticker(self, length: int) -> str:
        if self.lp + length > len(self.letters):
            self.letters = "".join(LETTERS[self.rng.choice(26, size=self.size * 5, p=_LW)])
            self.lp = 0
        out = self.letters[self.lp:self.lp + length]
        self.lp += length
        return out

    def random(self) -> float:
        if self.up >= len(self.u):
            self.u = self.rng.random(self.size * 8).tolist()
            self.up = 0
        self.up += 1
        return self.u[self.up - 1]

    def int(self, n: int) -> int:
        return int(self.random() * n)

    def pick(self, seq):
        return seq[int(self.random() * len(seq))]

    def weighted(self, values, cum_p) -> int:
        r = self.random()
        for v, c in zip(values, cum_p):
            if r < c:
                return v
        return values[-1]


def _company_name(dr: "_Draw", sector: str) -> str:
    core = dr.pick(_SYL1) + dr.pick(_SYL2)
    return f"{core} {dr.pick(_SECTOR_WORD[sector])}{dr.pick(_SUFFIX)}"


@dataclass
class Foreign:
    """Listings outside the US universe (lazily built)."""

    symbols: list[str]
    names: list[str]
    bulk_ids: np.ndarray  # indices into symbols that appear in eod-bulk / profile-bulk
    div_ids: np.ndarray  # indices into symbols that pay dividends (dividends-calendar)
    base_lp: np.ndarray  # per bulk listing (aligned with bulk_ids)
    sigma: np.ndarray
    vol_base: np.ndarray


class Universe:
    """Static per-symbol attributes of the US universe (arrays indexed by symbol id;
    symbol ids are positions in alphabetical order)."""

    def __init__(self, seed: int, n: int, sessions: Sessions, l0: int):
        if n < 1:
            raise ValueError("n_symbols must be >= 1")
        rng = np.random.default_rng([seed, 1])
        self.seed = seed
        self.n = n
        self.l0 = l0
        self._build_symbols(rng, n)
        self._build_attributes(rng, sessions, l0)
        self._foreign: Foreign | None = None
        self.index = {s: i for i, s in enumerate(self.symbols)}

    # -- symbols ------------------------------------------------------------
    def _build_symbols(self, rng, n: int) -> None:
        fixed = ["BRK-A", "BRK-B", "BF-A", "BF-B"] if n >= 100 else []
        k_class = int(n * 0.012)
        n_base = n - k_class - len(fixed)
        is_etf = rng.random(n_base) < 0.15
        exch = np.where(
            is_etf,
            rng.choice(3, size=n_base, p=[0.25, 0.05, 0.70]),  # NASDAQ, NYSE, AMEX
            rng.choice(3, size=n_base, p=[0.55, 0.38, 0.07]),
        )
        dr = _Draw(rng, n)
        len_p = {0: ([2, 3, 4, 5], [0.02, 0.20, 0.95, 1.0]), 1: ([1, 2, 3, 4], [0.01, 0.13, 0.75, 1.0]), 2: ([3, 4], [0.5, 1.0])}
        seen: set[str] = {"BRK", "BF"}
        bases: list[str] = []
        exch_l = exch.tolist()
        for k in range(n_base):
            lens, ps = len_p[exch_l[k]]
            while True:
                sym = dr.ticker(dr.weighted(lens, ps))
                if sym not in seen:
                    break
                lens, ps = [4, 5], [0.5, 1.0]  # short names run out: go longer
            seen.add(sym)
            bases.append(sym)
        self._dr = dr
        rows = [(s, bool(is_etf[k]), int(exch[k]), -1) for k, s in enumerate(bases)]
        stock_rows = [k for k in range(n_base) if not is_etf[k]] or list(range(n_base))
        parents = rng.choice(stock_rows, size=min(k_class, len(stock_rows)), replace=False) if k_class else []
        for p in parents:
            cls = "-B" if rng.random() < 0.6 else "-A"
            rows.append((bases[p] + cls, False, rows[p][2], int(p)))
        for k in range(n - len(rows) - len(fixed)):  # only when parents ran short
            rows.append((f"Z{k:03d}X", False, 0, -1))
        fixed_start = len(rows)
        for j, s in enumerate(fixed):
            rows.append((s, False, 1, fixed_start if j % 2 else -1) if j < 2 else (s, False, 1, fixed_start + 2 if j % 2 else -1))
        # sort alphabetically; remap parent pointers
        order = sorted(range(len(rows)), key=lambda k: rows[k][0])
        pos = {k: i for i, k in enumerate(order)}
        self.symbols = [rows[k][0] for k in order]
        self.is_etf = np.array([rows[k][1] for k in order])
        self.exch_code = np.array([rows[k][2] for k in order], dtype=np.int64)
        self.parent = np.array([pos[rows[k][3]] if rows[k][3] >= 0 else -1 for k in order], dtype=np.int64)
        assert len(set(self.symbols)) == n == len(self.symbols)

    # -- attributes ---------------------------------------------------------
    def _build_attributes(self, rng, sessions: Sessions, l0: int) -> None:
        n = self.n
        self.exch_short = np.array(["NASDAQ", "NYSE", "AMEX"])[self.exch_code]
        venue = rng.choice(3, size=n, p=[0.35, 0.25, 0.40])
        self.exch_full = [
            NASDAQ_VENUES[venue[i]] if c == 0 else ("New York Stock Exchange" if c == 1 else ("New York Stock Exchange Arca" if self.is_etf[i] else "New York Stock Exchange American"))
            for i, c in enumerate(self.exch_code)
        ]
        sec = rng.choice(len(SECTOR_NAMES), size=n, p=_SECTOR_P)
        ind = rng.integers(0, 100, size=n)
        self.sector, self.industry, self.name = [], [], []
        dr = self._dr
        etf_l, sec_l, ind_l = self.is_etf.tolist(), sec.tolist(), ind.tolist()
        for i in range(n):
            if etf_l[i]:
                self.sector.append("Financial Services")
                self.industry.append("Asset Management")
                self.name.append(f"{dr.pick(_ETF_ISSUERS)} {dr.pick(_ETF_THEMES)} ETF")
            else:
                s = SECTOR_NAMES[sec_l[i]]
                self.sector.append(s)
                self.industry.append(SECTORS[s][ind_l[i] % len(SECTORS[s])])
                self.name.append(_company_name(dr, s))
        for i in range(n):  # share classes share the company
            p = self.parent[i]
            if p >= 0:
                self.sector[i], self.industry[i] = self.sector[p], self.industry[p]
                base = self.name[p]
                self.name[p] = base  # parent keeps its name
                self.name[i] = base + (" Class B" if self.symbols[i].endswith("-B") else " Class A")
        if "BRK-B" in self.symbols:
            for s, nm in (("BRK-A", "Berkshire Hathaway Inc."), ("BRK-B", "Berkshire Hathaway Inc."), ("BF-A", "Brown-Forman Corporation"), ("BF-B", "Brown-Forman Corporation")):
                i = self.symbols.index(s)
                self.name[i] = nm
            for s in ("BRK-A", "BRK-B"):
                i = self.symbols.index(s)
                self.sector[i], self.industry[i] = "Financial Services", "Insurance - Diversified"
            for s in ("BF-A", "BF-B"):
                i = self.symbols.index(s)
                self.sector[i], self.industry[i] = "Consumer Defensive", "Beverages - Wineries & Distilleries"

        # listing: first session index
        cat = rng.choice(4, size=n, p=[0.12, 0.10, 0.70, 0.08])
        i2000 = sessions.on_or_after(date(2000, 1, 3))
        hi2 = max(1, l0 - 260)
        lo2 = min(i2000, hi2 - 1) if hi2 > 1 else 0
        u = rng.random(n)
        lst = np.where(
            cat == 0, 0,
            np.where(cat == 1, (u * max(1, min(i2000, l0))).astype(np.int64),
                     np.where(cat == 2, lo2 + (u * max(1, hi2 - lo2)).astype(np.int64),
                              l0 - 5 - (u * 245).astype(np.int64))))
        self.list_sess = np.clip(lst, 0, max(l0, 0)).astype(np.int64)
        old_ipo = [date(1962 + int(y), 1 + int(m), 1 + int(d)) for y, m, d in zip(rng.integers(0, 28, n), rng.integers(0, 12, n), rng.integers(0, 28, n))]
        self.ipo_date = [
            (old_ipo[i].isoformat() if (cat[i] == 0 and old_ipo[i] < sessions.start) else sessions.iso[self.list_sess[i]])
            for i in range(n)
        ]

        # price model parameters
        self.base_lp = np.log(np.exp(rng.normal(np.log(40.0), 1.0, n)).clip(0.8, 900.0))
        self.sigma = np.where(self.is_etf, rng.uniform(0.006, 0.015, n), rng.uniform(0.012, 0.035, n))
        self.drift = rng.normal(0.002, 0.006, n)
        self.vol_base = np.exp(rng.normal(np.log(350_000), 1.5, n)).clip(500, 8e7)
        self.shares = np.exp(rng.normal(np.log(60e6), 1.3, n)).clip(1e6, 2e10)
        self.beta = np.round(rng.normal(1.0, 0.45, n), 3)

        # dividends
        eligible = self.list_sess <= l0 - 600
        self.payer = eligible & (rng.random(n) < 0.55)
        self.freq = np.where(self.is_etf, rng.choice([4, 12, 1, 2], size=n, p=[0.55, 0.35, 0.07, 0.03]),
                             rng.choice([4, 12, 1, 2], size=n, p=[0.66, 0.12, 0.17, 0.05])).astype(np.int64)
        self.phase = (rng.random(n) * (12 // self.freq)).astype(np.int64)
        self.dom = rng.integers(1, 29, n)
        span = np.clip(l0 - 300 - self.list_sess, 21, 400)
        self.div_start = self.list_sess + 20 + (rng.random(n) * (span - 20)).astype(np.int64)
        self.div_yield = np.exp(rng.normal(np.log(0.025), 0.6, n)).clip(0.003, 0.12)

        # odd values FMP serves
        odd = rng.random((6, n)) < np.array([0.02, 0.02, 0.015, 0.01, 0.01, 0.01])[:, None]
        self.beta_null, self.cik_null, self.volume_exp, self.mcap_frac, self.mcap_null, self.lad_null = odd
        self.lad_null &= ~self.payer  # null lastAnnualDividend only where there is none
        cty = rng.random(n)
        self.country = np.where(cty < 0.965, "US", np.array(_COUNTRIES)[rng.integers(0, len(_COUNTRIES), n)])
        self.is_adr = (self.country != "US") & (rng.random(n) < 0.6) & ~self.is_etf
        self.currency = np.where(rng.random(n) < 0.006, rng.choice(["CAD", "EUR", "CNY"], n), "USD")
        self.cik = [None if self.cik_null[i] else f"{int(x):010d}" for i, x in enumerate(rng.integers(1000, 2_000_000, n))]
        alnum = np.array(list("0123456789ABCDEFGHJKLMNPRSTUVWXYZ"))
        cus = rng.choice(alnum, size=(n, 8))
        chk = rng.integers(0, 10, (n, 2))
        blank_ids = rng.random(n) < 0.03
        self.cusip = ["" if blank_ids[i] else "".join(cus[i]) + str(chk[i, 0]) for i in range(n)]
        self.isin = ["" if blank_ids[i] else f"US{self.cusip[i]}{chk[i, 1]}" for i in range(n)]
        self.employees = ["" if self.is_etf[i] else str(int(x)) for i, x in enumerate(np.exp(rng.normal(np.log(2500), 1.8, n)).clip(3, 2_100_000))]
        fi, la = rng.integers(0, len(_FIRST), n), rng.integers(0, len(_LAST), n)
        self.ceo = ["" if self.is_etf[i] else f"{_FIRST[fi[i]]} {_LAST[la[i]]}" for i in range(n)]
        ci = rng.integers(0, len(_CITIES), n)
        st = rng.integers(0, len(_STREETS), n)
        num = rng.integers(1, 9999, n)
        ph = rng.integers(2000000, 9999999, n)
        zp = rng.integers(0, 100, n)
        self.city = [_CITIES[c][0] for c in ci]
        self.state = [_CITIES[c][1] for c in ci]
        self.zip = [f"{_CITIES[c][2]}{z:02d}" for c, z in zip(ci, zp)]
        self.address = [f"{a} {_STREETS[s]}" for a, s in zip(num, st)]
        self.phone = [f"({_AREA[c]}) {str(p)[:3]}-{str(p)[3:]}" for c, p in zip(ci, ph)]

    # -- derived ----------------------------------------------------------------
    def website(self, i: int) -> str:
        slug = "".join(ch for ch in self.name[i].split(" ")[0].lower() if ch.isalnum()) or self.symbols[i].lower()
        return f"https://www.{slug}.com"

    def description(self, i: int) -> str:
        if self.is_etf[i]:
            return (f"The {self.name[i]} seeks to track the investment results of an index. The fund generally invests "
                    f"at least 80% of its assets in the component securities of its underlying index.")
        return (f"{self.name[i]} operates in the {self.industry[i].lower()} industry within the {self.sector[i].lower()} "
                f"sector. The company was incorporated and is headquartered in {self.city[i]}, {self.state[i]}.")

    # -- foreign -------------------------------------------------------------------
    @property
    def foreign(self) -> Foreign:
        if self._foreign is None:
            self._foreign = self._build_foreign()
        return self._foreign

    def _build_foreign(self) -> Foreign:
        rng = np.random.default_rng([self.seed, 2])
        dr = _Draw(rng, self.n * 4)
        n = self.n
        total = max(40, int(n * 3.8))
        seen = set(self.symbols)
        syms: list[str] = []
        names: list[str] = []
        kinds: list[int] = []  # 0 foreign listing, 1 fund, 2 crypto, 3 OTC

        def add(sym: str, name: str, kind: int) -> None:
            if sym not in seen:
                seen.add(sym)
                syms.append(sym)
                names.append(name)
                kinds.append(kind)

        add("0700.HK", "Tencent Holdings Limited", 0)
        add("BTCUSD", "Bitcoin USD", 2)
        add("ETHUSD", "Ethereum USD", 2)
        add("SHIBUSD", "Shiba Inu USD", 2)
        suffixes = [(".HK", "d4"), (".SZ", "sz"), (".SS", "ss"), (".L", "l"), (".TO", "l"), (".DE", "l"), (".PA", "l"), (".T", "d4"), (".NS", "l"), (".AX", "l"), (".KS", "d6")]
        kind_cum = [0.40, 0.88, 0.89, 1.0]
        while len(syms) < total:
            kind = dr.weighted([0, 1, 2, 3], kind_cum)
            sec = dr.pick(SECTOR_NAMES)
            if kind == 0:
                suf, style = dr.pick(suffixes)
                if style == "d4":
                    core = f"{1 + dr.int(9998):04d}"
                elif style == "d6":
                    core = f"{dr.int(999999):06d}"
                elif style == "sz":
                    core = f"{dr.pick([0, 2, 300]):03d}{1 + dr.int(998):03d}"
                elif style == "ss":
                    core = f"60{dr.int(9999):04d}"
                else:
                    core = dr.ticker(2 + dr.int(3))
                add(core + suf, _company_name(dr, sec).replace(" Inc.", " Limited"), 0)
            elif kind == 1:
                add(dr.ticker(4) + "X", f"{dr.pick(_ETF_ISSUERS)} {dr.pick(_ETF_THEMES)} Fund Admiral Shares", 1)
            elif kind == 2:
                c = dr.ticker(3 + dr.int(2))
                add(c + "USD", f"{c.title()} USD", 2)
            else:
                add(dr.ticker(4) + dr.pick(["F", "Y"]), _company_name(dr, sec), 3)
        kinds_a = np.array(kinds)
        listing = np.flatnonzero(kinds_a == 0)
        crypto = np.flatnonzero(kinds_a == 2)
        n_bulk = max(5, n // 10)
        bulk_ids = np.unique(np.concatenate([listing[:n_bulk], crypto[: max(3, n // 200)]]))
        div_ids = listing[: max(3, int(n * 0.6))]
        m = len(bulk_ids)  # price parameters only for listings that appear in bulk files
        is_crypto = kinds_a[bulk_ids] == 2
        base_lp = np.log(np.exp(rng.normal(np.log(30.0), 1.3, m)).clip(0.05, 5000))
        base_lp = np.where(is_crypto, rng.normal(np.log(2.0), 6.0, m), base_lp)
        pos = {int(j): k for k, j in enumerate(bulk_ids)}
        for sym, px in (("BTCUSD", 65000.0), ("ETHUSD", 3200.0), ("SHIBUSD", 1.2e-5), ("0700.HK", 380.0)):
            base_lp[pos[syms.index(sym)]] = np.log(px)
        sigma = np.where(is_crypto, 0.04, 0.015) * rng.uniform(0.7, 1.3, m)
        vol_base = np.exp(rng.normal(np.log(500_000), 1.5, m))
        return Foreign(syms, names, bulk_ids, div_ids, base_lp, sigma, vol_base)
