"""The FMP simulator's ordinary bad days (fmp-api-facts.md, "Ordinary bad days"), over real HTTP.

Every test runs on a fixed clock (never wall time) and moves it by setting the
config's `now`. Expected values come from the stated rules and from what the
endpoints served at another clock, not from the simulator's helpers; the
`GroundTruth` bad-day methods are then checked against what HTTP showed.
"""

from __future__ import annotations

import argparse
import csv
import io
from contextlib import contextmanager
from datetime import date, datetime, timedelta

import httpx
import pytest

from fmp_simulator import BadDays, GroundTruth, SimConfig, SimulatorServer, add_arguments, config_from_args
from fmp_simulator.calendar import ET

KEY = "bad-days-key"
N = 200
NOW = datetime(2024, 7, 10, 18, 0, tzinfo=ET)  # a Wednesday, after the close
LAST = date(2024, 7, 10)
REGULAR = {"Quarterly", "Monthly", "Annual", "Semi-Annual"}


def at(day: date, hour: int = 18) -> datetime:
    return datetime(day.year, day.month, day.day, hour, 0, tzinfo=ET)


def cfg(bad_days: BadDays | None = None, **kw) -> SimConfig:
    base = dict(seed=7, n_symbols=N, plan="ultimate", api_keys=(KEY,), now=NOW, bulk_min_interval_s=0.0,
                bad_days=bad_days or BadDays())
    base.update(kw)
    return SimConfig(**base)


@contextmanager
def served(config: SimConfig):
    with SimulatorServer(config) as sim, httpx.Client(base_url=sim.base_url, headers={"apikey": KEY},
                                                      timeout=30) as client:
        yield sim, client


def get(client: httpx.Client, path: str, **params):
    r = client.get(path, params=params)
    assert r.status_code == 200, (path, params, r.status_code, r.text[:200])
    return r.json()


def bulk(client: httpx.Client, day: date) -> dict[str, dict]:
    r = client.get("eod-bulk", params={"date": day.isoformat()})
    assert r.status_code == 200 and r.text.startswith('"symbol"')
    rows = {}
    for row in csv.DictReader(io.StringIO(r.text)):
        rows[row["symbol"]] = {k: float(row[k]) for k in ("open", "high", "low", "close")} | {
            "volume": int(float(row["volume"]))}
    return rows


def screener_all(client: httpx.Client) -> list[dict]:
    rows = get(client, "company-screener", limit=5000)
    assert len(rows) < 5000
    return rows


def history(client: httpx.Client, symbol: str, start: date, end: date) -> dict[str, dict]:
    return {b["date"]: b for b in get(client, "historical-price-eod/full", symbol=symbol, **{"from": start, "to": end})}


# ------------------------------------------------------------------------ 1. quotes after the close
def test_after_close_quote_is_not_the_official_bar():
    with served(cfg(BadDays(quote_close_diff_p=0.2))) as (sim, client):
        symbols = [r["symbol"] for r in screener_all(client)]
        official = bulk(client, LAST)
        quotes = get(client, "batch-quote", symbols=",".join(symbols))
        assert [q["symbol"] for q in quotes] == symbols  # all traded on LAST
        close = datetime(2024, 7, 10, 16, 0, tzinfo=ET)
        price_off, volume_short = set(), set()
        for q in quotes:
            bar = official[q["symbol"]]
            assert datetime.fromtimestamp(q["timestamp"], ET) == close  # it stands for the session
            assert q["open"] == bar["open"]
            tick = 0.01 if bar["close"] >= 1 else 0.0001
            # a late print: a few basis points (at least a tick) off the official close
            assert abs(q["price"] - bar["close"]) <= 0.0008 * bar["close"] + tick + 1e-9
            assert 0.95 * bar["volume"] - 1 <= q["volume"] <= bar["volume"]  # a few percent short, never more
            assert q["dayHigh"] == max(bar["high"], q["price"]) and q["dayLow"] == min(bar["low"], q["price"])
            if q["price"] != bar["close"]:
                price_off.add(q["symbol"])
            if q["volume"] < bar["volume"]:
                volume_short.add(q["symbol"])
        assert 0.05 * N < len(price_off) < 0.4 * N  # quote_close_diff_p = 0.2
        assert 0.3 * N < len(volume_short) < 0.7 * N  # quote_volume_short_p = 0.5 (default)
        # the history serves the official bar, not the quote
        some = sorted(price_off)[0]
        assert history(client, some, LAST, LAST)[LAST.isoformat()]["close"] == official[some]["close"]
        # the next morning, before the open, the quote still stands for the last session
        sim.config.now = datetime(2024, 7, 11, 8, 0, tzinfo=ET)
        assert get(client, "batch-quote", symbols=",".join(symbols)) == quotes
        # during the next session: the day so far, stamped now
        sim.config.now = datetime(2024, 7, 11, 12, 0, tzinfo=ET)
        live = get(client, "batch-quote", symbols=some)[0]
        assert live["timestamp"] == int(sim.config.now.timestamp())
        assert live["previousClose"] == official[some]["close"]
        sim.config.now = NOW
        # the ground truth says the same
        diffs = {d["symbol"]: d for d in sim.truth.quote_differences()}
        assert set(diffs) == price_off | volume_short
        by_symbol = {q["symbol"]: q for q in quotes}
        assert all((d["price"], d["quoteVolume"]) == (by_symbol[s]["price"], by_symbol[s]["volume"])
                   and (d["close"], d["volume"]) == (official[s]["close"], official[s]["volume"])
                   for s, d in diffs.items())
        assert sim.truth.quote(some) == by_symbol[some]


# ------------------------------------------------------------------------ 2. revisions
def test_revisions_reach_the_history_lag_sessions_later():
    config = cfg(BadDays(revision_p=0.05), split_rate_per_symbol_week=0.0)
    days = [date(2024, 7, d) for d in (1, 2, 3, 5, 8, 9, 10)]
    later = at(date(2024, 7, 12))  # two sessions on: the bars of 07-09 and 07-10 reach their revision lag
    with served(config) as (sim, client):
        before = {d: bulk(client, d) for d in days}
        settled_then = {}
        expected = {(r["symbol"], r["date"]): r for r in sim.truth.revisions(days[0], LAST)}
        for sym, d in expected:
            settled_then[(sym, d)] = sim.truth.bar(sym, date.fromisoformat(d), settled=True)
        sim.config.now = later
        after = {d: bulk(client, d) for d in days}
        changed = {}
        for d in days:
            us = set(before[d]) & set(sim.truth.symbols())
            for sym in us:
                if before[d][sym] != after[d][sym]:
                    changed[(sym, d.isoformat())] = (before[d][sym], after[d][sym])
        assert changed, "no bar was revised"
        # only the bars whose session + 2 closed between the two clocks changed
        assert {d for _, d in changed} <= {"2024-07-09", "2024-07-10"}
        kinds = {"volume": 0, "close": 0}
        for (sym, d), (b, a) in changed.items():
            assert a["open"] == b["open"]
            if a["close"] == b["close"]:  # a volume revision: nothing else moves
                assert (a["high"], a["low"]) == (b["high"], b["low"]) and a["volume"] != b["volume"]
                assert 0.85 * b["volume"] <= a["volume"] <= 1.3 * b["volume"]
                kinds["volume"] += 1
            else:  # a close revision: high and low kept consistent
                assert a["volume"] == b["volume"]
                assert abs(a["close"] / b["close"] - 1) <= 0.011 or abs(a["close"] - b["close"]) <= 0.0101
                assert a["high"] == max(b["high"], a["close"]) and a["low"] == min(b["low"], a["close"])
                kinds["close"] += 1
        assert kinds["volume"] >= kinds["close"] > 0  # volume most often, the close at times
        # the history, and the other histories, serve the same revision
        (sym, d), (b, a) = sorted(changed.items())[0]
        bar = history(client, sym, days[0], LAST)[d]
        assert (bar["close"], bar["volume"], bar["high"], bar["low"]) == (a["close"], a["volume"], a["high"], a["low"])
        vol = next((k for k, (b2, a2) in sorted(changed.items()) if a2["volume"] != b2["volume"]), None)
        if vol:
            for path in ("historical-price-eod/non-split-adjusted", "historical-price-eod/dividend-adjusted"):
                rows = get(client, path, symbol=vol[0], **{"from": vol[1], "to": vol[1]})
                assert rows[0]["volume"] == changed[vol][1]["volume"]
        # the ground truth: at the first clock these were known, not yet visible, before -> after
        hidden = {k: r for k, r in expected.items() if not r["visible"]}
        assert set(hidden) == set(changed)
        for k, r in hidden.items():
            fields = ("open", "high", "low", "close", "volume")
            assert tuple(r["before"][f] for f in fields) == tuple(changed[k][0][f] for f in fields)
            assert tuple(r["after"][f] for f in fields) == tuple(changed[k][1][f] for f in fields)
            assert r["visibleFrom"] == {"2024-07-09": "2024-07-11", "2024-07-10": "2024-07-12"}[k[1]]
            assert {f: settled_then[k][f] for f in fields} == r["after"]
        assert all(r["visible"] for k, r in expected.items() if k not in hidden)
        # and now they are visible
        assert all(r["visible"] for r in sim.truth.revisions(days[0], LAST))


# ------------------------------------------------------------------------ 3. screener pages
def _by_market_cap(rows: list[dict]) -> list[str]:
    return [r["symbol"] for r in sorted(rows, key=lambda r: -(r["marketCap"] or 0))]


def test_short_screener_pages_lose_rows_even_when_paging_to_the_empty_page():
    with served(cfg(BadDays(short_page_p=1.0))) as (sim, client):
        everything = get(client, "company-screener", limit=1000)  # one page, the last: never short
        assert len(everything) == N
        order = _by_market_cap(everything)
        assert [r["symbol"] for r in everything] == order
        pages, page = [], 0
        while True:
            rows = get(client, "company-screener", limit=60, page=page)
            if not rows:
                break
            pages.append([r["symbol"] for r in rows])
            page += 1
        assert len(pages) == 4  # 60 + 60 + 60 + 20
        for k, rows in enumerate(pages):
            expected = order[60 * k:60 * (k + 1)]
            assert set(rows) <= set(expected) and rows == [s for s in expected if s in rows]
            if k < 3:  # not the last page: short (short_page_p = 1)
                assert 0 < 60 - len(rows) < 0.35 * 60
            else:
                assert rows == expected
        lost = set(order) - {s for rows in pages for s in rows}
        assert lost  # a client paging until an empty page still lost the dropped rows
        # a client that stops on the first short page loses much more
        assert len(pages[0]) < 60
        # keyed on (session, query, page): the same page again is the same short page ...
        assert [r["symbol"] for r in get(client, "company-screener", limit=60, page=1)] == pages[1]
        # ... the truth knows which rows it dropped ...
        shorts = sim.truth.short_pages({"limit": "60"})
        assert sorted(shorts) == [0, 1, 2]
        assert {s for dropped in shorts.values() for s in dropped} == lost
        assert sim.truth.screener_page({"limit": "60", "page": "1"})["dropped"] == [
            s for s in order[60:120] if s not in pages[1]]
        # ... another query (a filter) has its own short pages, and the next session other ones
        sim.config.now = at(date(2024, 7, 11))
        again = get(client, "company-screener", limit=60, page=0)
        order2 = _by_market_cap(get(client, "company-screener", limit=1000))
        dropped_next_day = [s for s in order2[:60] if s not in {r["symbol"] for r in again}]
        assert dropped_next_day and dropped_next_day != [s for s in order[:60] if s not in pages[0]]


def test_screener_paging_is_exact_the_page_past_the_end_is_empty_and_limit_is_capped():
    with served(cfg(BadDays(short_page_p=0.0, screener_max_limit=64))) as (sim, client):
        order = _by_market_cap(sim.truth.universe())
        for page in range(4):
            rows = get(client, "company-screener", limit=10000, page=page)  # served as 64 a page
            assert [r["symbol"] for r in rows] == order[64 * page:64 * (page + 1)]
        assert get(client, "company-screener", limit=10000, page=4) == []
        assert get(client, "company-screener", limit=64, page=3) == get(client, "company-screener", limit=10000, page=3)
        assert [r["symbol"] for r in get(client, "company-screener", limit=50, page=3)] == order[150:200]
        assert get(client, "company-screener", limit=50, page=4) == []
    assert BadDays().screener_max_limit == 5000  # the default cap


# ------------------------------------------------------------------------ 4. two dividends, one ex-date
def test_a_special_and_a_regular_dividend_share_an_ex_date_and_both_are_served():
    with served(cfg()) as (sim, client):
        payers = [r["symbol"] for r in screener_all(client)]
        specials, regular = [], 0
        for sym in payers:
            rows = get(client, "dividends", symbol=sym)
            regular += sum(r["frequency"] in REGULAR for r in rows)
            for r in rows:
                if r["frequency"] == "Special":
                    twins = [x for x in rows if x["date"] == r["date"] and x is not r]
                    assert [x["frequency"] in REGULAR for x in twins] == [True]  # the regular one of that day
                    assert twins[0]["recordDate"] == r["recordDate"] and twins[0]["dividend"] != r["dividend"]
                    specials.append((r, twins[0]))
        assert specials, "no special dividend"
        assert 0.005 < len(specials) / regular < 0.04  # special_dividend_p = 0.02 (default)
        special, twin = max(specials, key=lambda p: p[0]["date"])
        day = special["date"]
        calendar = get(client, "dividends-calendar", **{"from": day, "to": day})
        assert special in calendar and twin in calendar
        # the dividend-adjusted history applies both on that ex-date
        sym = special["symbol"]
        start = date.fromisoformat(day) - timedelta(days=10)
        bars = get(client, "historical-price-eod/full", symbol=sym, **{"from": start, "to": day})
        adjusted = get(client, "historical-price-eod/dividend-adjusted", symbol=sym, **{"from": start, "to": day})
        prev, prev_adj = bars[1], adjusted[1]  # the session before the ex-date
        assert bars[0]["date"] == day and prev["date"] == prev_adj["date"]
        expected = (1 - special["adjDividend"] / prev["close"]) * (1 - twin["adjDividend"] / prev["close"])
        ratio = (prev_adj["adjClose"] / prev["close"]) / (adjusted[0]["adjClose"] / bars[0]["close"])
        assert ratio == pytest.approx(expected, rel=1e-9)
        assert special in sim.truth.special_dividends(sym)
        assert len(sim.truth.special_dividends()) == len(specials)


# ------------------------------------------------------------------------ 5. null lastAnnualDividend
def test_some_payers_have_a_null_last_annual_dividend():
    with served(cfg()) as (sim, client):
        rows = screener_all(client)
        year_ago = (LAST - timedelta(days=364)).isoformat()
        null_payers = {}
        for r in rows:
            if r["lastAnnualDividend"] is None:
                paid = [d["adjDividend"] for d in get(client, "dividends", symbol=r["symbol"]) if d["date"] >= year_ago]
                if paid:
                    null_payers[r["symbol"]] = round(sum(paid), 4)
        assert null_payers, "no payer with a null lastAnnualDividend"
        payers = sum(1 for r in rows if r["lastAnnualDividend"]) + len(null_payers)
        assert len(null_payers) < 0.2 * payers  # null_last_dividend_p = 0.05 (default)
        # a client that filters on the dividend misses them
        filtered = {r["symbol"] for r in get(client, "company-screener", limit=5000, dividendMoreThan=0)}
        assert not filtered & set(null_payers)
        # the profile still has the value; the truth tells it
        for sym, value in null_payers.items():
            assert get(client, "profile", symbol=sym)[0]["lastDividend"] == pytest.approx(value, abs=2e-4)
        assert {r["symbol"]: r["lastAnnualDividend"] for r in sim.truth.null_payers()} == pytest.approx(
            null_payers, abs=2e-4)


# ------------------------------------------------------------------------ 6. late splits
def test_a_late_split_reaches_the_splits_and_the_history_lag_sessions_after_its_ex_date():
    symbol = GroundTruth(cfg()).symbols()[11]
    split = {"symbol": symbol, "date": "2024-07-15", "numerator": 2, "denominator": 1}
    config = cfg(BadDays(revision_p=0.0), split_rate_per_symbol_week=0.0, splits=((symbol, "2024-07-15", 2, 1, 2),),
                 now=at(date(2024, 7, 12)))
    week = (date(2024, 7, 11), date(2024, 7, 16))

    def calendar(client):
        return [r for r in get(client, "splits-calendar", **{"from": "2024-07-01", "to": "2024-07-31"})
                if r["symbol"] == symbol]

    with served(config) as (sim, client):
        old = history(client, symbol, *week)  # before the ex-date: old units
        assert list(old) == ["2024-07-12", "2024-07-11"]
        for day in (date(2024, 7, 15), date(2024, 7, 16)):  # ex-date closed, not yet two more sessions
            sim.config.now = at(day)
            assert get(client, "splits", symbol=symbol) == [] and calendar(client) == []
            bars = history(client, symbol, *week)
            assert {d: bars[d] for d in old} == old  # the adjustment lags: still the old units
            assert bars["2024-07-15"]["close"] < 0.7 * old["2024-07-12"]["close"]  # the ex-date trades in the new
            assert bulk(client, date(2024, 7, 12))[symbol]["close"] == old["2024-07-12"]["close"]
            traded = get(client, "historical-price-eod/non-split-adjusted", symbol=symbol,
                         **{"from": "2024-07-12", "to": "2024-07-12"})
            assert traded[0]["adjClose"] == old["2024-07-12"]["close"]
            assert sim.truth.late_splits() == [{**split, "visibleFrom": "2024-07-17", "visible": False}]
            assert sim.truth.splits(symbol, settled=True) == [split]
            settled = sim.truth.bar(symbol, date(2024, 7, 12), settled=True)
            assert settled["close"] == pytest.approx(old["2024-07-12"]["close"] / 2, abs=0.01)
        sim.config.now = at(date(2024, 7, 17))  # two sessions after the ex-date closed: served
        assert get(client, "splits", symbol=symbol) == [split] and calendar(client) == [split]
        bars = history(client, symbol, *week)
        for d in old:
            assert bars[d]["close"] == pytest.approx(old[d]["close"] / 2, abs=0.01)
            assert bars[d]["volume"] == pytest.approx(old[d]["volume"] * 2, abs=2)
        assert bulk(client, date(2024, 7, 12))[symbol]["close"] == bars["2024-07-12"]["close"]
        assert sim.truth.late_splits()[0]["visible"]


def test_seeded_splits_are_late_at_the_configured_rate():
    # many splits (about 10 a week over 200 symbols), half of them late
    config = cfg(BadDays(late_split_p=0.5, revision_p=0.0), split_rate_per_symbol_week=0.05)
    window = {"from": "2024-07-01", "to": "2024-07-10"}
    with served(config) as (sim, client):
        early = get(client, "splits-calendar", **window)
        bars_then = {}
        sim.config.now = at(date(2024, 7, 12))  # two sessions later every split of the window is served
        late_rows = [r for r in get(client, "splits-calendar", **window) if r not in early]
        assert late_rows, "no late split"
        assert {r["date"] for r in late_rows} <= {"2024-07-09", "2024-07-10"}  # ex-date + 2 sessions > 07-10
        sim.config.now = NOW
        for r in late_rows:
            assert r not in get(client, "splits", symbol=r["symbol"])
            before = (date.fromisoformat(r["date"]) - timedelta(days=7), date.fromisoformat(r["date"]))
            bars_then[r["symbol"]] = history(client, r["symbol"], *before)
        sim.config.now = at(date(2024, 7, 12))
        for r in late_rows:
            ratio = r["numerator"] / r["denominator"]
            later = history(client, r["symbol"], date.fromisoformat(r["date"]) - timedelta(days=7),
                            date.fromisoformat(r["date"]))
            for d, bar in bars_then[r["symbol"]].items():
                if d < r["date"]:  # adjusted only now
                    assert later[d]["close"] == pytest.approx(bar["close"] / ratio, rel=0.02, abs=0.011)
                else:
                    assert later[d] == bar


# ------------------------------------------------------------------------ 7. listed before trading, empty profiles
def test_a_new_listing_is_in_the_screener_before_its_first_bar():
    symbol = GroundTruth(cfg()).symbols()[17]
    config = cfg(listings=((symbol, "2024-07-12"),), now=at(date(2024, 7, 8)))

    def in_screener(client) -> bool:
        return symbol in {r["symbol"] for r in screener_all(client)}

    with served(config) as (sim, client):
        assert not in_screener(client)  # 3 sessions before 07-12 is 07-09
        for day in (date(2024, 7, 9), date(2024, 7, 10), date(2024, 7, 11)):
            sim.config.now = at(day)
            assert in_screener(client)
            row = next(r for r in screener_all(client) if r["symbol"] == symbol)
            assert row["volume"] == 0
            assert get(client, "historical-price-eod/full", symbol=symbol) == []
            assert get(client, "profile", symbol=symbol) == []
            assert get(client, "batch-quote", symbols=symbol) == []
            assert symbol not in bulk(client, day)
            assert sim.truth.pre_listings() == [{"symbol": symbol, "screenerFrom": "2024-07-09",
                                                 "firstBar": "2024-07-12", "trading": False}]
        sim.config.now = at(date(2024, 7, 12), hour=12)  # its first session: the day so far
        quote = get(client, "batch-quote", symbols=symbol)[0]
        assert quote["timestamp"] == int(sim.config.now.timestamp()) and quote["previousClose"] == quote["open"]
        assert get(client, "historical-price-eod/full", symbol=symbol) == []
        sim.config.now = at(date(2024, 7, 12))
        assert [b["date"] for b in get(client, "historical-price-eod/full", symbol=symbol)] == ["2024-07-12"]
        assert symbol in bulk(client, date(2024, 7, 12))
        assert get(client, "profile", symbol=symbol)[0]["ipoDate"] == "2024-07-12"


def test_seeded_recent_ipos_are_listed_before_trading():
    config = cfg(BadDays(pre_listing_ipo_p=0.5))
    with served(config) as (sim, client):
        rows = screener_all(client)
        assert len(rows) == N
        waiting = [r["symbol"] for r in rows if not history(client, r["symbol"], LAST - timedelta(days=30), LAST)]
        assert waiting, "no listing before trading"
        assert all(r["volume"] == 0 for r in rows if r["symbol"] in waiting)
        sim.config.now = at(date(2024, 7, 15))  # three sessions on: every one has its first bar
        for sym in waiting:
            bars = get(client, "historical-price-eod/full", symbol=sym)
            assert bars and "2024-07-11" <= bars[-1]["date"] <= "2024-07-15"
        sim.config.now = NOW
        assert [p["symbol"] for p in sim.truth.pre_listings()] == sorted(waiting)


def test_some_listed_symbols_answer_profile_with_an_empty_list():
    config = cfg(BadDays(empty_profile_p=0.05))
    with served(config) as (sim, client):
        symbols = [r["symbol"] for r in screener_all(client)]
        empty = [s for s in symbols if get(client, "profile", symbol=s) == []]
        assert 0 < len(empty) < 0.15 * N
        for s in empty:  # listed and trading, only the profile is missing
            assert get(client, "historical-price-eod/full", symbol=s, **{"from": LAST, "to": LAST})
        sim.config.now = at(date(2024, 7, 15))  # a fixed set: the same days later
        assert [s for s in symbols if get(client, "profile", symbol=s) == []] == empty
        assert sim.truth.empty_profiles() == sorted(empty)
        assert sim.truth.profile(empty[0]) is None and sim.truth.profile(empty[0], settled=True)["symbol"] == empty[0]


# ------------------------------------------------------------------------ configuration
def test_bad_days_off_and_cli_options():
    off = BadDays.off()
    assert all(v == 0 for k, v in off.to_dict().items() if k.endswith("_p")) and off.pre_listing_sessions == 0
    assert all(v > 0 for k, v in BadDays().to_dict().items() if k.endswith("_p"))
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert config_from_args(p.parse_args([]))[0].bad_days == BadDays()
    assert config_from_args(p.parse_args(["--no-bad-days"]))[0].bad_days == off
    c = config_from_args(p.parse_args(["--bad-day", "revision_p=0.2", "--bad-day", "screener_max_limit=none"]))[0]
    assert c.bad_days.revision_p == 0.2 and c.bad_days.screener_max_limit is None
    with pytest.raises(SystemExit):
        config_from_args(p.parse_args(["--bad-day", "nope=1"]))
    # off: the after-close quote is the bar and no dividend is Special
    with served(cfg(off)) as (sim, client):
        symbols = sim.truth.symbols()
        quotes = get(client, "batch-quote", symbols=",".join(symbols))
        official = bulk(client, LAST)
        assert all((q["price"], q["volume"]) == (official[q["symbol"]]["close"], official[q["symbol"]]["volume"])
                   for q in quotes)
        assert sim.truth.special_dividends() == [] and sim.truth.quote_differences() == []
