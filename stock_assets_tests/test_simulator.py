"""The FMP simulator over real HTTP (httpx against uvicorn on a loopback port)."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from datetime import date, datetime, timedelta

import httpx
import pytest

from fmp_simulator import BadDays, GroundTruth, SimConfig, SimulatorServer
from fmp_simulator.app import SlidingWindowLimiter
from fmp_simulator.calendar import ET

KEY = "test-key-0123456789"
NOW = datetime(2024, 7, 10, 18, 0, tzinfo=ET)  # a Wednesday, after the close
LAST = date(2024, 7, 10)
N = 300

PROFILE_FIELDS = [
    "symbol", "price", "marketCap", "beta", "lastDividend", "range", "change", "changePercentage", "volume",
    "averageVolume", "companyName", "currency", "cik", "isin", "cusip", "exchangeFullName", "exchange", "industry",
    "website", "description", "ceo", "sector", "country", "fullTimeEmployees", "phone", "address", "city", "state",
    "zip", "image", "ipoDate", "defaultImage", "isEtf", "isActivelyTrading", "isAdr", "isFund",
]
QUERY_ERROR = "Query Error: Invalid or missing query parameter - {}"


def cfg(**kw) -> SimConfig:
    base = dict(seed=7, n_symbols=N, plan="ultimate", api_keys=(KEY,), now=NOW, bulk_min_interval_s=0.0)
    base.update(kw)
    return SimConfig(**base)


@pytest.fixture(scope="module")
def sim():
    with SimulatorServer(cfg()) as s:
        yield s


@pytest.fixture()
def client(sim):
    sim.faults.reset()
    with httpx.Client(base_url=sim.base_url, headers={"apikey": KEY}, timeout=30) as c:
        yield c
    sim.faults.reset()


def payer(sim) -> str:
    return next(r["symbol"] for r in sim.truth.universe() if r["lastAnnualDividend"])


# --------------------------------------------------------------------------- universe
def test_screener_rows_match_truth_with_fmp_quirks(sim, client):
    r = client.get("company-screener", params={"limit": 10000})
    assert r.status_code == 200
    rows = r.json()
    truth = sim.truth.universe()
    assert len(rows) == len(truth) == N
    assert {x["symbol"]: x for x in rows} == {x["symbol"]: x for x in truth}
    assert list(rows[0]) == ["symbol", "companyName", "marketCap", "sector", "industry", "beta", "price",
                             "lastAnnualDividend", "volume", "exchange", "exchangeShortName", "country", "isEtf",
                             "isFund", "isActivelyTrading"]
    assert {x["exchangeShortName"] for x in rows} == {"NYSE", "NASDAQ", "AMEX"}
    assert any(x["exchange"] == "NASDAQ Global Select" for x in rows)
    assert any(x["isEtf"] for x in rows) and not all(x["isEtf"] for x in rows)
    payers = sum(1 for x in rows if x["lastAnnualDividend"])
    assert 0.3 * N < payers < 0.7 * N
    assert any(x["beta"] is None for x in rows)
    # integral volumes in exponent form for some symbols, e.g. 2.9909012e7
    assert re.search(r'"volume":\d\.\d+e\d+', r.text)
    # default limit 1000 / paging and filters
    assert len(client.get("company-screener", params={"limit": 50}).json()) == 50
    nyse = client.get("company-screener", params={"exchange": "NYSE", "limit": 10000}).json()
    assert nyse and {x["exchangeShortName"] for x in nyse} == {"NYSE"}
    assert sorted(x["symbol"] for x in nyse) == sim.truth.symbols("NYSE")


def test_symbols_are_unique_realistic_and_listed_at_different_times(sim):
    t = sim.truth
    syms = t.symbols()
    assert len(syms) == len(set(syms)) == N
    assert all(re.fullmatch(r"[A-Z]{1,5}(-[AB])?", s) for s in syms)
    assert {"BRK-B", "BF-B"} <= set(syms)
    first = {s: t.eod_bars(s, date(1990, 1, 1), date(2030, 1, 1)) for s in syms[::5]}
    # 5,000-row cap: use the ground-truth listing instead for first trading days
    ipo = [t.cal.date(int(x)) for x in t.uni.list_sess]
    assert min(ipo) == date(1990, 1, 2)
    assert any(date(1990, 1, 3) <= d < date(2000, 1, 1) for d in ipo)
    assert any(d > LAST - timedelta(days=365) for d in ipo)  # recent IPOs
    assert all(rows for rows in first.values())


def test_stock_list_is_everything_with_two_fields(client, sim):
    rows = client.get("stock-list").json()
    assert set(rows[0]) == {"symbol", "companyName"}
    syms = {r["symbol"] for r in rows}
    assert set(sim.truth.symbols()) <= syms
    assert {"0700.HK", "BTCUSD"} <= syms
    assert len(rows) > 3 * N


# --------------------------------------------------------------------------- eod-bulk
def test_eod_bulk_csv_shape_and_truth(client, sim):
    with client.stream("GET", "eod-bulk", params={"date": "2024-07-09"}) as r:
        assert r.status_code == 200
        assert "content-length" not in r.headers
        assert r.headers.get("transfer-encoding") == "chunked"
        assert r.headers["content-type"].startswith("text/csv")
        text = r.read().decode()
    assert text.split("\n", 1)[0] == '"symbol","date","open","low","high","close","adjClose","volume"'
    assert re.search(r'^"[A-Z]+","2024-07-09",', text.split("\n")[1])
    assert re.search(r"\d\.\d+e-\d+", text)  # tiny crypto prices in scientific notation
    assert re.search(r",\d\.\d+e\d+\n", text)  # exponent-form volumes
    rows = list(csv.DictReader(io.StringIO(text)))
    by_sym = {r["symbol"]: r for r in rows}
    assert {"0700.HK", "BTCUSD"} <= set(by_sym)
    truth = sim.truth.bulk_eod(date(2024, 7, 9))
    us = [r for r in rows if r["symbol"] in set(sim.truth.symbols())]
    assert len(us) == len(truth) > 0
    for t in truth:
        row = by_sym[t["symbol"]]
        for k in ("open", "low", "high", "close", "adjClose", "volume"):
            assert float(row[k]) == pytest.approx(float(t[k]), rel=1e-12)
        assert float(row["low"]) <= min(float(row["open"]), float(row["close"]))
        assert float(row["high"]) >= max(float(row["open"]), float(row["close"]))
    # a day that is not a session: header only
    assert client.get("eod-bulk", params={"date": "2024-07-04"}).text.strip().count("\n") == 0
    r = client.get("eod-bulk")
    assert r.status_code == 400 and r.text == QUERY_ERROR.format("date")


def test_adjclose_reflects_later_dividends(sim):
    t = sim.truth
    sym = payer(sim)
    divs = t.dividends(sym)
    ex = date.fromisoformat(divs[-1]["date"])  # oldest ex-date
    before = t.cal.date(t.cal.on_or_before(ex - timedelta(days=1)))
    row = next(r for r in t.bulk_eod(before) if r["symbol"] == sym)
    assert row["adjClose"] < row["close"]
    last = next(r for r in t.bulk_eod(LAST) if r["symbol"] == sym)
    assert last["adjClose"] == last["close"]


# --------------------------------------------------------------------------- history
def test_history_shape_cap_and_to(client, sim):
    r = client.get("historical-price-eod/full", params={"symbol": "BRK-B", "from": "1990-01-01"})
    rows = r.json()
    assert list(rows[0]) == ["symbol", "date", "open", "high", "low", "close", "volume", "change", "changePercent", "vwap"]
    listed = sim.truth.cal.date(int(sim.truth.uni.list_sess[sim.truth.symbol_id("BRK-B")]))
    sessions = sim.truth.sessions(max(listed, date(1990, 1, 1)), LAST)
    if len(sessions) > 5000:  # cap drops the OLDEST rows
        assert len(rows) == 5000
        assert rows[0]["date"] == LAST.isoformat()
        assert rows[-1]["date"] == sessions[-5000].isoformat()
    dates = [x["date"] for x in rows]
    assert dates == sorted(dates, reverse=True)
    # a symbol listed since 1990 always hits the cap; `to` moves the window back
    old = next(s for s in sim.truth.symbols() if sim.truth.uni.list_sess[sim.truth.symbol_id(s)] == 0)
    capped = client.get("historical-price-eod/full", params={"symbol": old, "from": "1990-01-01"}).json()
    assert len(capped) == 5000 and capped[0]["date"] == LAST.isoformat()
    to = date.fromisoformat(capped[-1]["date"]) - timedelta(days=1)
    older = client.get("historical-price-eod/full", params={"symbol": old, "from": "1990-01-01", "to": to.isoformat()}).json()
    assert older[0]["date"] <= to.isoformat() and older[-1]["date"] == "1990-01-02"
    assert len(older) == len(sim.truth.sessions(date(1990, 1, 1), to))
    # default range: about five years
    default = client.get("historical-price-eod/full", params={"symbol": old}).json()
    span = date.fromisoformat(default[0]["date"]) - date.fromisoformat(default[-1]["date"])
    assert timedelta(days=5 * 365 - 10) < span <= timedelta(days=5 * 366)


@pytest.mark.parametrize("params", [
    {"symbol": "ZZZZZZ"}, {"symbol": "BRK.B"}, {"symbol": "BRK-B,BF-B"},
    {"symbol": "BRK-B", "from": "2024-07-01", "to": "2024-06-01"},
])
def test_history_empty_answers(client, params):
    r = client.get("historical-price-eod/full", params=params)
    assert r.status_code == 200 and r.json() == []


def test_history_missing_symbol_is_query_error(client):
    r = client.get("historical-price-eod/full")
    assert r.status_code == 400 and r.text == QUERY_ERROR.format("symbol")


def test_sessions_skip_weekends_and_nyse_holidays(client, sim):
    rows = client.get("historical-price-eod/full", params={"symbol": "BRK-B", "from": "2023-12-20", "to": "2024-07-10"}).json()
    dates = {x["date"] for x in rows}
    assert "2024-07-03" in dates and "2024-07-05" in dates
    assert "2024-07-04" not in dates and "2023-12-25" not in dates
    assert all(date.fromisoformat(d).weekday() < 5 for d in dates)
    assert sim.truth.sessions(date(2024, 7, 1), date(2024, 12, 31))[-1] == LAST  # closed sessions only
    s = GroundTruth(cfg(now=datetime(2025, 1, 10, 17, 0, tzinfo=ET))).sessions(date(2024, 12, 20), date(2024, 12, 31))
    assert date(2024, 12, 25) not in s and date(2024, 12, 24) in s and date(2024, 12, 21) not in s


def test_ohlc_invariants(sim):
    t = sim.truth
    for d in (date(1995, 3, 1), date(2008, 10, 10), LAST):
        for r in t.bulk_eod(t.cal.date(t.cal.on_or_before(d))):
            assert 0 < r["low"] <= min(r["open"], r["close"]) <= max(r["open"], r["close"]) <= r["high"]
            assert r["volume"] >= 0
    for s in t.symbols()[:40]:
        for r in t.eod_bars(s, date(1990, 1, 1)):
            assert 0 < r["low"] <= min(r["open"], r["close"]) <= max(r["open"], r["close"]) <= r["high"]
            assert r["volume"] >= 0


def test_starter_plan_history_is_five_years():
    with SimulatorServer(cfg(plan="starter")) as s:
        rows = httpx.get(s.base_url + "/historical-price-eod/full", params={"symbol": "BRK-B", "from": "2000-01-01"},
                         headers={"apikey": KEY}).json()
        assert rows[-1]["date"] >= "2019-07-10"
        assert rows[-1]["date"] <= "2019-07-20"


# --------------------------------------------------------------------------- quotes
def test_batch_quote_after_close_is_the_session_bar(client, sim):
    r = client.get("batch-quote", params={"symbols": "BRK-B,NOPEZ,BF-B,BRK-B"})
    rows = r.json()
    assert [x["symbol"] for x in rows] == ["BRK-B", "BF-B", "BRK-B"]
    bar = sim.truth.bar("BRK-B", LAST)
    q = rows[0]
    # The session's quote, but (a bad day) its last print and volume need not be the official bar's.
    assert q["open"] == bar["open"]
    assert abs(q["price"] - bar["close"]) <= max(0.01, 0.001 * bar["close"])
    assert 0.95 * bar["volume"] <= q["volume"] <= bar["volume"]
    assert (q["dayLow"], q["dayHigh"]) == (min(bar["low"], q["price"]), max(bar["high"], q["price"]))
    assert isinstance(q["timestamp"], int)
    assert datetime.fromtimestamp(q["timestamp"], ET) == datetime(2024, 7, 10, 16, 0, tzinfo=ET)
    assert q == sim.truth.quote("BRK-B")
    # without bad days it is exactly the session's bar
    clean = GroundTruth(cfg(bad_days=BadDays.off()))
    q, bar = clean.quote("BRK-B"), clean.bar("BRK-B", LAST)
    assert (q["price"], q["open"], q["dayLow"], q["dayHigh"], q["volume"]) == (
        bar["close"], bar["open"], bar["low"], bar["high"], bar["volume"])


def test_quote_during_session_is_a_partial_bar():
    t = GroundTruth(cfg(now=datetime(2024, 7, 10, 12, 0, tzinfo=ET)))
    assert t.last_closed_session() == date(2024, 7, 9)
    q = t.quote("BRK-B")
    full = GroundTruth(cfg()).bar("BRK-B", LAST)
    assert q["open"] == full["open"]
    assert full["low"] <= q["dayLow"] and q["dayHigh"] <= full["high"]
    assert q["dayLow"] <= q["price"] <= q["dayHigh"]
    assert 0 < q["volume"] < full["volume"]
    assert q["timestamp"] == int(datetime(2024, 7, 10, 12, 0, tzinfo=ET).timestamp())
    # historical endpoints only serve closed sessions
    assert t.eod_bars("BRK-B", date(2024, 7, 1))[0]["date"] == "2024-07-09"


def test_batch_quote_can_be_withdrawn():
    with SimulatorServer(cfg(batch_quote_served=False)) as s:
        r = httpx.get(s.base_url + "/batch-quote", params={"symbols": "BRK-B"}, headers={"apikey": KEY})
        assert r.status_code == 402 and r.json()["Error Message"].startswith("Restricted Endpoint")


# --------------------------------------------------------------------------- dividends
def test_dividends_full_history_ignores_from_to(client, sim):
    sym = payer(sim)
    rows = client.get("dividends", params={"symbol": sym}).json()
    assert rows == sim.truth.dividends(sym) and len(rows) >= 1
    assert list(rows[0]) == ["symbol", "date", "recordDate", "paymentDate", "declarationDate", "adjDividend",
                             "dividend", "yield", "frequency"]
    assert rows == client.get("dividends", params={"symbol": sym, "from": "2024-01-01", "to": "2024-02-01"}).json()
    assert {r["frequency"] for r in rows} <= {"Quarterly", "Monthly", "Annual", "Semi-Annual", "Special"}
    sessions = set(sim.truth.sessions(date(1990, 1, 1), LAST))
    assert all(date.fromisoformat(r["date"]) in sessions for r in rows)
    assert client.get("dividends", params={"symbol": "BRK.B"}).json() == []


def test_dividends_missing_symbol_400_plain_text_json_type(client):
    r = client.get("dividends")
    assert r.status_code == 400
    assert r.text == QUERY_ERROR.format("symbol")
    assert r.headers["content-type"].startswith("application/json")


def test_dividends_calendar_foreign_rows_and_consistency(client, sim):
    rows = client.get("dividends-calendar", params={"from": "2024-06-01", "to": "2024-06-30"}).json()
    assert rows and all("2024-06-01" <= r["date"] <= "2024-06-30" for r in rows)
    assert any(re.search(r"\.(SZ|HK|L|SS|TO|DE|PA|T|NS|AX|KS)$", r["symbol"]) for r in rows)
    blank = [r for r in rows if r["declarationDate"] == ""]
    assert blank and len(blank) < len(rows)
    us = set(sim.truth.symbols())
    for r in rows:
        if r["symbol"] in us:
            assert r in sim.truth.dividends(r["symbol"])
    assert rows == sim.truth.dividends_calendar(date(2024, 6, 1), date(2024, 6, 30))[:4000]
    assert client.get("dividends-calendar", params={"from": "2024-07-01", "to": "2024-06-01"}).json() == []


def test_dividends_calendar_cap_drops_oldest_dates(client, sim):
    full = sim.truth.dividends_calendar(date(2014, 1, 1), date(2024, 6, 30))
    assert len(full) > 4000
    rows = client.get("dividends-calendar", params={"from": "2014-01-01", "to": "2024-06-30"}).json()
    assert len(rows) == 4000
    newest = max(r["date"] for r in full)
    assert rows[0]["date"] == newest
    assert min(r["date"] for r in rows) > min(r["date"] for r in full)
    cut = min(r["date"] for r in rows)
    assert all(r in rows for r in full if r["date"] > cut)  # everything newer than the cut is there


# --------------------------------------------------------------------------- profiles
def test_profile_shape(client, sim):
    rows = client.get("profile", params={"symbol": "BRK-B"}).json()
    assert len(rows) == 1 and list(rows[0]) == PROFILE_FIELDS
    p = rows[0]
    assert isinstance(p["fullTimeEmployees"], str) and p["fullTimeEmployees"].isdigit()
    assert isinstance(p["isEtf"], bool) and isinstance(p["isAdr"], bool)
    assert re.fullmatch(r"[\d.]+-[\d.]+", p["range"])
    assert p == sim.truth.profile("BRK-B")
    for s in ("BRK.B", "NOPEZ"):
        assert client.get("profile", params={"symbol": s}).json() == []
    assert any(sim.truth.profile(s)["cik"] is None for s in sim.truth.symbols())
    assert any(isinstance(sim.truth.profile(s)["marketCap"], float) for s in sim.truth.symbols())


def test_profile_bulk_parts(sim):
    with SimulatorServer(cfg(profile_bulk_part_size=100)) as s, httpx.Client(headers={"apikey": KEY}) as c:
        seen = []
        part = 0
        while True:
            r = c.get(s.base_url + "/profile-bulk", params={"part": part})
            if r.status_code == 400:
                assert r.text == QUERY_ERROR.format("part")
                break
            assert r.status_code == 200 and "content-length" not in r.headers
            rows = list(csv.DictReader(io.StringIO(r.text)))
            assert r.text.split("\n", 1)[0] == ",".join(f'"{f}"' for f in PROFILE_FIELDS)
            seen += [x["symbol"] for x in rows]
            part += 1
        assert part >= 3
        assert len(seen) == len(set(seen)) and set(s.truth.symbols()) <= set(seen)
        assert seen != sorted(seen)  # not in symbol order


# --------------------------------------------------------------------------- errors, plans, limits
def test_auth_errors_and_key_in_query(sim):
    with httpx.Client(base_url=sim.base_url) as c:
        for headers in ({}, {"apikey": "wrong"}):
            r = c.get("profile", params={"symbol": "BRK-B"}, headers=headers)
            assert r.status_code == 401
            assert r.json()["Error Message"].startswith("Invalid API KEY. Feel free to create a Free API Key")
        assert c.get("profile", params={"symbol": "BRK-B", "apikey": KEY}).status_code == 200


def test_legacy_and_unknown_paths(sim):
    r = httpx.get(sim.root_url + "/api/v3/historical-price-full/AAPL", headers={"apikey": KEY})
    assert r.status_code == 403 and r.json()["Error Message"].startswith("Legacy Endpoint")
    r = httpx.get(sim.root_url + "/api/v4/batch-request-end-of-day-prices", headers={"apikey": KEY})
    assert r.status_code == 403
    r = httpx.get(sim.base_url + "/no-such-endpoint", headers={"apikey": KEY})
    assert r.status_code == 404 and r.json() == []


def test_premium_gets_402_for_bulk():
    with SimulatorServer(cfg(plan="premium")) as s:
        for path, params in (("eod-bulk", {"date": "2024-07-09"}), ("profile-bulk", {"part": 0})):
            r = httpx.get(f"{s.base_url}/{path}", params=params, headers={"apikey": KEY})
            assert r.status_code == 402
            assert r.json()["Error Message"].startswith("Restricted Endpoint: This endpoint is not available")
        r = httpx.get(s.base_url + "/batch-quote", params={"symbols": "BRK-B"}, headers={"apikey": KEY})
        assert r.status_code == 200 and r.json()


def test_429_after_limit_without_retry_after():
    with SimulatorServer(cfg(rate_limit_per_min=5)) as s, httpx.Client(headers={"apikey": KEY}) as c:
        codes = [c.get(s.base_url + "/profile", params={"symbol": "BRK-B"}).status_code for _ in range(5)]
        assert codes == [200] * 5
        r = c.get(s.base_url + "/profile", params={"symbol": "BRK-B"})
        assert r.status_code == 429
        assert r.json()["Error Message"].startswith("Limit Reach . Please upgrade your plan")
        assert "retry-after" not in r.headers
        assert not [h for h in r.headers if h.lower().startswith("x-ratelimit")]


def test_sliding_window_does_not_count_rejections():
    lim = SlidingWindowLimiter(lambda: 3)
    assert [lim.allow("k", t) for t in (0.0, 1.0, 2.0)] == [True] * 3
    assert not lim.allow("k", 30.0) and not lim.allow("k", 59.0)
    assert lim.allow("other", 30.0)
    assert lim.allow("k", 60.5)  # the t=0 hit left the window; rejections did not extend it
    assert not lim.allow("k", 60.6)
    assert lim.allow("k", 61.5)


def test_bulk_throttle_answers_200_limit_reach():
    with SimulatorServer(cfg(bulk_min_interval_s=1.0)) as s, httpx.Client(headers={"apikey": KEY}) as c:
        first = c.get(s.base_url + "/eod-bulk", params={"date": "2024-07-09"})
        assert first.status_code == 200 and first.text.startswith('"symbol"')
        again = c.get(s.base_url + "/eod-bulk", params={"date": "2024-07-08"})
        assert again.status_code == 200
        assert again.json()["Error Message"].startswith("Limit Reach")
        other = c.get(s.base_url + "/profile-bulk", params={"part": 0})  # per endpoint
        assert other.text.startswith('"symbol"')
        time.sleep(1.05)
        assert c.get(s.base_url + "/eod-bulk", params={"date": "2024-07-08"}).text.startswith('"symbol"')


# --------------------------------------------------------------------------- determinism and truth
def test_same_seed_same_answers_other_seed_differs(sim):
    with SimulatorServer(cfg()) as a, SimulatorServer(cfg(seed=8)) as b:
        for path, params in (("eod-bulk", {"date": "2003-05-06"}),
                             ("historical-price-eod/full", {"symbol": "BRK-B", "from": "2010-01-01"}),
                             ("company-screener", {"limit": 10000})):
            ra = httpx.get(f"{sim.base_url}/{path}", params=params, headers={"apikey": KEY}).content
            rb = httpx.get(f"{a.base_url}/{path}", params=params, headers={"apikey": KEY}).content
            rc = httpx.get(f"{b.base_url}/{path}", params=params, headers={"apikey": KEY}).content
            assert ra == rb
            assert ra != rc


def test_past_bars_do_not_change_as_time_advances():
    later = GroundTruth(cfg(now=datetime(2024, 9, 3, 17, 0, tzinfo=ET)))
    now = GroundTruth(cfg())
    assert later.eod_bars("BRK-B", date(2024, 1, 1), LAST) == now.eod_bars("BRK-B", date(2024, 1, 1), LAST)
    assert later.last_closed_session() == date(2024, 9, 3)


def test_ground_truth_matches_http(client, sim):
    t = sim.truth
    for s in t.symbols()[::37]:
        assert client.get("historical-price-eod/full", params={"symbol": s, "from": "2020-01-01"}).json() == \
            t.eod_bars(s, date(2020, 1, 1))
        assert client.get("dividends", params={"symbol": s}).json() == t.dividends(s)
        assert client.get("profile", params={"symbol": s}).json() == [t.profile(s)]
    assert t.last_closed_session() == LAST
    assert client.get("batch-quote", params={"symbols": ",".join(t.symbols()[:50])}).json() == \
        [t.quote(s) for s in t.symbols()[:50] if t.quote(s)]


# --------------------------------------------------------------------------- request log
def test_request_log_never_holds_the_key(tmp_path):
    path = tmp_path / "requests.jsonl"
    with SimulatorServer(cfg(request_log_path=str(path))) as s:
        httpx.get(s.base_url + "/profile", params={"symbol": "BRK-B", "apikey": KEY})
        httpx.get(s.base_url + "/dividends", params={"symbol": "BRK-B"}, headers={"apikey": KEY})
        log = s.requests()
        assert [r["path"] for r in log] == ["profile", "dividends"]
        r0 = log[0]
        assert set(r0) == {"t", "path", "params", "key_id", "status", "bytes", "duration_s", "fault"}
        assert r0["params"] == {"symbol": "BRK-B"} and r0["status"] == 200 and r0["bytes"] > 100
        assert r0["key_id"] and r0["key_id"] == log[1]["key_id"] and r0["key_id"] not in KEY
        assert abs(r0["t"] - time.time()) < 60
        assert KEY not in json.dumps(log) and KEY not in path.read_text()
        assert len(path.read_text().splitlines()) == 2
        remote = httpx.get(s.control_url + "/requests", params={"path": "dividends"}).json()
        assert len(remote) == 1 and remote[0]["path"] == "dividends"
        assert httpx.delete(s.control_url + "/requests").json() == {"cleared": 2}
        assert s.requests() == []


# --------------------------------------------------------------------------- faults
def test_truncated_bodies(sim, client):
    sim.faults.truncate_p = 1.0
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete|closed"):
        client.get("historical-price-eod/full", params={"symbol": "BRK-B"})
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("eod-bulk", params={"date": "2024-07-09"})
    last = sim.requests()[-1]
    assert last["fault"] == "truncate" and last["status"] == 200 and last["bytes"] > 0


def test_connection_reset(sim, client):
    sim.faults.reset_p = 1.0
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.get("profile", params={"symbol": "BRK-B"})
    assert sim.requests()[-1]["fault"] == "reset" and sim.requests()[-1]["status"] is None


def test_malformed_json(sim, client):
    sim.faults.malformed_p = 1.0
    r = client.get("profile", params={"symbol": "BRK-B"})
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)


def test_error_rate_and_control_endpoint_not_faulted(sim, client):
    r = httpx.post(sim.control_url + "/faults", json={"error_rate": 1.0})
    assert r.status_code == 200 and r.json()["error_rate"] == 1.0
    assert sim.faults.error_rate == 1.0
    codes = {client.get("profile", params={"symbol": "BRK-B"}).status_code for _ in range(30)}
    assert codes <= {500, 502, 503} and len(codes) >= 2
    assert httpx.get(sim.control_url + "/health").json()["status"] == "ok"
    sim.faults.error_rate = 0.3
    codes = [client.get("profile", params={"symbol": "BRK-B"}).status_code for _ in range(200)]
    assert 30 < sum(c != 200 for c in codes) < 90
    assert httpx.post(sim.control_url + "/faults", json={"nope": 1}).status_code == 400


def test_failing_and_slow_symbols(sim, client):
    httpx.post(sim.control_url + "/faults", json={"failing_symbols": ["BF-B"], "slow_symbols": "BRK-A",
                                                  "slow_symbol_factor": 3})
    assert client.get("profile", params={"symbol": "BF-B"}).status_code == 500
    assert client.get("dividends", params={"symbol": "BF-B"}).status_code == 500
    assert client.get("profile", params={"symbol": "BF-A"}).status_code == 200
    t0 = time.monotonic()
    assert client.get("profile", params={"symbol": "BRK-A"}).status_code == 200
    assert time.monotonic() - t0 >= 0.3
    assert sim.requests()[-1]["duration_s"] >= 0.3


def test_latency_and_stall(sim, client):
    sim.faults.latency_s = 0.2
    t0 = time.monotonic()
    client.get("profile", params={"symbol": "BRK-B"})
    assert time.monotonic() - t0 >= 0.2
    sim.faults.latency_s = 0.0
    sim.faults.stall_p, sim.faults.stall_s = 1.0, 5.0
    with pytest.raises(httpx.ReadTimeout):
        client.get("profile", params={"symbol": "BRK-B"}, timeout=0.5)


# --------------------------------------------------------------------------- CLI helpers and scale
def test_cli_options_build_config():
    import argparse

    from fmp_simulator import add_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    c, host, port = config_from_args(p.parse_args([
        "--plan", "ultimate", "--symbols", "500", "--seed", "3", "--api-key", "a", "--api-key", "b",
        "--latency-ms", "50", "--slow-symbols", "aapl,MSFT", "--error-rate", "0.1", "--no-batch-quote",
        "--bulk-min-interval-s", "2", "--failing-symbols", "X",
    ]))
    assert (host, port) == ("127.0.0.1", 8765)
    assert c.plan == "ultimate" and c.n_symbols == 500 and c.seed == 3 and c.api_keys == ("a", "b")
    assert c.faults.latency_s == 0.05 and c.faults.slow_symbols == frozenset({"AAPL", "MSFT"})
    assert c.faults.error_rate == 0.1 and not c.batch_quote_served and c.bulk_min_interval_s == 2.0
    assert config_from_args(p.parse_args([]))[0].api_keys == ("demo",)


def test_full_size_universe_is_unique_and_every_symbol_has_a_bulk_bar():
    # Speed is measured in bench/, not asserted here: this checks the full size works.
    t = GroundTruth(SimConfig(now=NOW))
    syms = t.symbols()
    assert len(syms) == len(set(syms)) == 19205
    rows = t.bulk_eod(LAST)
    # every symbol but the few listed before trading (a bad day: in the screener, no bar yet)
    missing = set(syms) - {r["symbol"] for r in rows}
    assert len(rows) == 19205 - len(missing) and len(missing) < 20
    assert all(t.eod_bars(s) == [] for s in missing)


def test_the_simulator_stands_alone():
    """It imports nothing of the product: a fake sharing the client's code could not catch its mistakes."""
    import subprocess
    import sys

    probe = ("import sys, fmp_simulator, fmp_simulator.server, fmp_simulator.app; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'stock_assets'))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------- corporate actions
def _split_config(now: datetime, symbol: str) -> SimConfig:
    return cfg(now=now, split_rate_per_symbol_week=0.0, splits=((symbol, "2024-07-15", 2, 1),))


def test_history_is_split_adjusted_as_of_now_and_the_split_is_served():
    symbol = GroundTruth(cfg()).symbols()[5]
    config = _split_config(NOW, symbol)
    before, after = date(2024, 7, 1), datetime(2024, 7, 17, 18, 0, tzinfo=ET)
    with SimulatorServer(config) as s, httpx.Client(base_url=s.base_url, headers={"apikey": KEY}) as c:
        old = c.get("historical-price-eod/full", params={"symbol": symbol, "from": before, "to": before}).json()
        assert c.get("splits", params={"symbol": symbol}).json() == []  # not yet
        config.now = after  # the clock passes the 2-for-1 split's ex-date
        new = c.get("historical-price-eod/full", params={"symbol": symbol, "from": before, "to": before}).json()
        assert new[0]["close"] == pytest.approx(old[0]["close"] / 2, abs=0.01)
        assert new[0]["volume"] == pytest.approx(old[0]["volume"] * 2, abs=2)
        split = {"symbol": symbol, "date": "2024-07-15", "numerator": 2, "denominator": 1}
        assert c.get("splits", params={"symbol": symbol}).json() == [split]
        assert split in c.get("splits-calendar", params={"from": "2024-07-15", "to": "2024-07-15"}).json()
        assert c.get("splits-calendar", params={"from": "2024-07-16", "to": "2024-07-16"}).json() == [
            r for r in s.truth.splits_calendar(date(2024, 7, 16), date(2024, 7, 16))]
        traded = c.get("historical-price-eod/non-split-adjusted",
                       params={"symbol": symbol, "from": before, "to": before}).json()
        assert set(traded[0]) == {"symbol", "date", "adjOpen", "adjHigh", "adjLow", "adjClose", "volume"}
        assert traded[0]["adjClose"] == pytest.approx(old[0]["close"], abs=0.02)  # as it traded that day


def test_dividend_adjusted_history_applies_every_later_dividend():
    truth = GroundTruth(cfg())
    symbol = next(r["symbol"] for r in truth.universe() if r["lastAnnualDividend"])
    bars = {b["date"]: b for b in truth.eod_bars(symbol, date(2023, 1, 1), LAST)}
    adjusted = {b["date"]: b for b in truth.dividend_adjusted(symbol, date(2023, 1, 1), LAST)}
    assert adjusted.keys() == bars.keys()
    newest = max(bars)
    assert adjusted[newest]["adjClose"] == bars[newest]["close"]  # no dividend after the newest bar
    oldest = min(bars)
    dividends = [d for d in truth.dividends(symbol) if oldest < d["date"] <= newest]
    assert dividends
    sessions = sorted(bars)
    factor = 1.0
    for d in dividends:
        prev = bars[sessions[sessions.index(d["date"]) - 1]]["close"]
        factor *= 1 - d["adjDividend"] / prev
    assert adjusted[oldest]["adjClose"] == pytest.approx(bars[oldest]["close"] * factor, rel=1e-12)


def test_a_dividend_before_a_split_is_declared_in_the_old_shares():
    truth = GroundTruth(cfg())
    symbol = next(r["symbol"] for r in truth.universe() if r["lastAnnualDividend"])
    config = _split_config(datetime(2024, 7, 17, 18, 0, tzinfo=ET), symbol)
    rows = GroundTruth(config).dividends(symbol)
    before = [r for r in rows if r["date"] < "2024-07-15"]
    assert before and all(r["dividend"] == pytest.approx(2 * r["adjDividend"], abs=1e-4) for r in before)
