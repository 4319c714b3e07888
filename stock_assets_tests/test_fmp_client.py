"""The FMP client (`FMPResource`) over real HTTP against the FMP simulator.

Every test talks to a uvicorn-served simulator on a loopback port and checks
what the client parsed against the simulator's ground truth, and what went over
the wire against the simulator's request log. Retry tests use a tiny backoff;
timing assertions use generous bounds.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections import Counter
from datetime import date, datetime
from pathlib import Path

import pytest

from stock_assets.fmp import (
    FMPAuthError, FMPError, FMPForbiddenError, FMPPlanError, FMPQueryError, FMPResource, FMPTransientError)
from stock_assets.fmp import redaction
from stock_assets.fmp.chunking import ChunkSizer, FetchSummary, fetch_chunks
from stock_assets.fmp import DEFAULT_PACE_FRACTION
from stock_assets.fmp.limiter import SharedRateLimiter, pace_rates
from stock_assets.fmp.records import (
    BAR_COLUMNS, Dividend, HistoricalBar, Profile, Quote, ScreenerRow, parse_history, parse_rows)
from fmp_simulator import SimConfig, SimulatorServer
from fmp_simulator.calendar import ET
from fmp_simulator.truth import ExpFloat

# A distinctive key: any leak of it anywhere is unambiguous.
KEY = "sk-LEAKCANARY-7f3a9c2e51d84b06"
WRONG_KEY = "sk-WRONGCANARY-c0ffee42deadbeef"
NOW = datetime(2024, 7, 10, 18, 0, tzinfo=ET)  # a Wednesday, after the close
LAST = date(2024, 7, 10)
N = 300
ROOT_PROJECT = Path(__file__).resolve().parents[1]


def sim_config(**kw) -> SimConfig:
    base = dict(seed=7, n_symbols=N, plan="ultimate", api_keys=(KEY,), now=NOW, bulk_min_interval_s=0.0,
                rate_limit_per_min=1_000_000)
    base.update(kw)
    return SimConfig(**base)


@pytest.fixture(scope="module")
def sim():
    with SimulatorServer(sim_config()) as s:
        yield s


@pytest.fixture()
def make(sim, tmp_path):
    """Factory of FMPResources pointed at `sim` (fast retries, own limiter file); all closed after."""
    made: list[FMPResource] = []
    sim.faults.reset()
    sim.clear_requests()

    def build(**kw) -> FMPResource:
        base = dict(api_key=KEY, base_url=sim.base_url, plan="ultimate", rate_limit_per_min=600_000,
                    limiter_state=str(tmp_path / "limiter.sqlite"), backoff_base_s=0.01, backoff_max_s=0.05,
                    bulk_calls_per_min=60_000, timeout_s=10.0, max_retries=6)
        base.update(kw)
        resource = FMPResource(**base)
        made.append(resource)
        return resource

    yield build
    for resource in made:
        resource.close()
    sim.faults.reset()


def settled(sim, *resources: FMPResource, path: str | None = None) -> list[dict]:
    """The request log once it holds every attempt the resources made.

    The simulator appends an entry when it has finished a response (a stalled
    one only after its stall), which can be just after the client has it.
    """
    attempts = sum(len([c for c in r.calls.since() if path is None or c.endpoint == path]) for r in resources)
    return sim.settled_requests(path, at_least=attempts)


def faults_seen(sim, path: str | None = None) -> Counter:
    return Counter(r["fault"] for r in sim.requests(path) if r["fault"])


def outcomes(resource: FMPResource) -> Counter:
    return Counter(call.outcome for call in resource.calls.since())


def old_symbol(sim) -> str:
    """A symbol listed on the first session: 34 years of bars, far past the 5,000-row cap."""
    uni = sim.truth.uni
    return next(s for i, s in enumerate(uni.symbols) if uni.list_sess[i] == 0 and "-" not in s)


def some_symbols(sim, n: int) -> list[str]:
    return sim.truth.symbols()[:n]


# =========================================================================== endpoints
def test_screener_parses_exponent_volumes_null_beta_and_booleans(sim, make):
    r = make()
    parsed = r.company_screener("NYSE,NASDAQ,AMEX")
    truth = {row["symbol"]: row for row in sim.truth.universe()}
    assert not parsed.rejects
    assert len(parsed.records) == len(truth) == N
    by_symbol = {rec.symbol: rec for rec in parsed.records}
    assert set(by_symbol) == set(truth)
    exponent = [s for s, row in truth.items() if type(row["volume"]) is ExpFloat]
    null_beta = [s for s, row in truth.items() if row["beta"] is None]
    assert exponent and null_beta  # the quirks are really on the wire
    for s in exponent:
        assert isinstance(by_symbol[s].volume, int) and by_symbol[s].volume == round(truth[s]["volume"])
    for s in null_beta:
        assert by_symbol[s].beta is None
    for s, row in truth.items():
        rec = by_symbol[s]
        assert rec == ScreenerRow.model_validate(row)
        assert rec.is_etf is row["isEtf"] and isinstance(rec.is_actively_trading, bool)
        assert rec.exchange_short_name == row["exchangeShortName"] and rec.market_cap == row["marketCap"]
    assert any(rec.is_etf for rec in parsed.records) and not all(rec.is_etf for rec in parsed.records)
    # filters go out as FMP's camelCase, booleans lower-case
    r.company_screener("NYSE", is_etf=False, limit=50)
    params = sim.requests("company-screener")[-1]["params"]
    assert params["isEtf"] == "false" and params["limit"] == "50" and params["exchange"] == "NYSE"


def test_stock_list(sim, make):
    parsed = make().stock_list()
    truth = sim.truth.stock_list()
    assert not parsed.rejects
    assert [(e.symbol, e.company_name) for e in parsed.records] == [(t["symbol"], t["companyName"]) for t in truth]


def test_eod_bulk_parses_by_header_name_with_scientific_notation_and_keep(sim, make):
    day = date(2024, 7, 9)
    r = make()
    everything = r.eod_bulk(day)
    assert not everything.rejects
    truth_all = {row[0]: row for row in sim.truth.bulk_rows(day)}
    assert {bar.symbol for bar in everything.records} == set(truth_all)
    tiny = [bar for bar in everything.records if bar.close < 0.01]
    assert tiny, "crypto rows in scientific notation are parsed as numbers"
    for bar in tiny:
        _, _, o, lo, hi, c, a, v = truth_all[bar.symbol]
        assert (bar.open, bar.low, bar.high, bar.close, bar.adj_close) == (o, lo, hi, c, a)
        assert 0 < bar.low < bar.high

    us = set(sim.truth.symbols())
    kept = r.eod_bulk(day, keep=us.__contains__)
    truth = {row["symbol"]: row for row in sim.truth.bulk_eod(day)}
    assert not kept.rejects
    assert {bar.symbol for bar in kept.records} == set(truth) == us
    for bar in kept.records:
        t = truth[bar.symbol]
        # `low` comes before `high` in the header: parsed by name, not position
        assert bar.low == t["low"] and bar.high == t["high"] and bar.low <= bar.high
        assert (bar.open, bar.close, bar.adj_close, bar.volume) == (t["open"], t["close"], t["adjClose"],
                                                                   round(t["volume"]))
        assert bar.date == day
    assert any(type(t["volume"]) is ExpFloat for t in truth.values())


@pytest.mark.parametrize("sessions, calls", [(None, 2), (5000, 1), (5001, 2)])
def test_price_history_walks_back_across_the_row_cap(sim, make, sessions, calls):
    symbol = old_symbol(sim)
    truth_sessions = sim.truth.cal
    last_index = sim.truth.last_closed_index()
    start = date(1990, 1, 1) if sessions is None else truth_sessions.date(last_index - sessions + 1)
    parsed = make().price_history(symbol, start, LAST)
    expected = [HistoricalBar.model_validate(row) for row in _truth_bars(sim, symbol, start, LAST)]
    if sessions is None:
        assert len(expected) > 8000
    else:
        assert len(expected) == sessions
    assert not parsed.rejects
    got = sorted(parsed.table.to_pylist(), key=lambda bar: bar["date"], reverse=True)
    assert len({bar["date"] for bar in got}) == len(got), "no duplicate rows where pages meet"
    assert got == [_columns(bar) for bar in expected], "no gap, no duplicate, same values as the simulator's truth"
    log = sim.requests("historical-price-eod/full")
    assert len(log) == calls
    assert [entry["params"]["to"] for entry in log][0] == LAST.isoformat()


def _columns(bar: HistoricalBar) -> dict:
    return {name: getattr(bar, name) for name in BAR_COLUMNS.names}


def test_history_as_columns_checks_what_the_records_check():
    """A clean answer becomes columns straight from the JSON; one messy row sends the answer row by
    row: either way the same bars and the same rejects as `HistoricalBar` validation."""
    clean = [{"symbol": "AAA", "date": f"2024-01-{d:02d}", "open": 1.0 + d, "high": 3, "low": 0.5, "close": 2.5,
              "volume": 1000.0 * d, "vwap": 1.2} for d in range(1, 29)]
    messy = clean + [
        {"symbol": "AAA", "date": "2024-02-01", "open": "", "high": 2, "low": 1, "close": 1, "volume": 5},
        {"symbol": "AAA", "date": "2024-02-02", "open": "1.5", "high": 2, "low": 1, "close": 1, "volume": "2.9e7"},
        {"symbol": "AAA", "date": "2024-02-05", "open": 1, "high": 2, "low": 1, "close": 1, "volume": 10.6},
        {"symbol": "AAA", "date": "2024-02-06", "open": 1, "high": 2, "low": 1, "volume": 1},
        {"symbol": "", "date": "2024-02-07", "open": 1, "high": 2, "low": 1, "close": 1},
        {"symbol": "AAA", "date": "not a date", "open": 1, "high": 2, "low": 1, "close": 1},
        "not a row",
    ]
    for rows in (clean, messy):
        history = parse_history(rows, "historical-price-eod/full", "AAA")
        parsed = parse_rows(HistoricalBar, rows, "historical-price-eod/full", "AAA")
        assert history.table.schema == BAR_COLUMNS
        assert history.table.to_pylist() == [_columns(bar) for bar in parsed.records]
        assert history.rejects == parsed.rejects
    assert len(parse_history(messy, "historical-price-eod/full", "AAA").rejects) == 5


def _truth_bars(sim, symbol, start, end) -> list[dict]:
    """Uncapped truth, newest first, assembled from capped slices of the ground truth."""
    rows, to = [], end
    while True:
        page = sim.truth.eod_bars(symbol, start, to)
        rows += page
        if len(page) < 5000:
            return rows
        to = date.fromisoformat(page[-1]["date"]) - dt.timedelta(days=1)
        if to < start:
            return rows


def test_historical_prices_single_call_keeps_the_newest_5000(sim, make):
    symbol = old_symbol(sim)
    parsed = make().historical_prices(symbol, date(1990, 1, 1), LAST)
    assert len(parsed.records) == 5000
    assert parsed.records == [HistoricalBar.model_validate(r) for r in sim.truth.eod_bars(symbol, date(1990, 1, 1), LAST)]
    assert parsed.records[0].date == LAST
    assert len(sim.requests("historical-price-eod/full")) == 1


def test_batch_quotes_drop_duplicates_and_unknown_symbols(sim, make):
    a, b = some_symbols(sim, 2)
    parsed = make().batch_quotes([a, a, b, "NOPEZ", "BRK.B"])
    assert sorted(q.symbol for q in parsed.records) == sorted([a, b])
    for quote in parsed.records:
        truth = sim.truth.quote(quote.symbol)
        assert quote == Quote.model_validate(truth)
        assert quote.timestamp == datetime.fromtimestamp(truth["timestamp"], dt.timezone.utc)
        assert quote.timestamp.tzinfo is not None
    # the wire answer really held the duplicate
    assert sim.requests("batch-quote")[0]["params"]["symbols"] == f"{a},{a},{b},NOPEZ,BRK.B"


def test_dividends_blank_declaration_date_and_yield(sim, make):
    r = make()
    payers = [s for s in sim.truth.symbols() if sim.truth.dividends(s)]
    symbol = next(s for s in payers if any(d["declarationDate"] == "" for d in sim.truth.dividends(s)))
    parsed = r.dividends(symbol)
    truth = sim.truth.dividends(symbol)
    assert not parsed.rejects and len(parsed.records) == len(truth)
    for rec, row in zip(parsed.records, truth):
        assert rec.ex_date == date.fromisoformat(row["date"])
        assert rec.yield_pct == row["yield"] and rec.dividend == row["dividend"]
        assert rec.declaration_date == (None if row["declarationDate"] == "" else date.fromisoformat(row["declarationDate"]))
        assert rec.frequency == row["frequency"]
    assert any(rec.declaration_date is None for rec in parsed.records)
    non_payer = next(s for s in sim.truth.symbols() if not sim.truth.dividends(s))
    assert r.dividends(non_payer).records == []


def test_dividends_calendar_one_day_and_at_cap_over_a_long_range(sim, make):
    r = make()
    day = date(2024, 6, 14)
    one = r.dividends_calendar(day, day)
    truth = sim.truth.dividends_calendar(day, day)
    assert 0 < len(truth) < 4000 and not one.at_cap
    assert one.records == [Dividend.model_validate(row) for row in truth]
    assert any(not rec.symbol.isalpha() for rec in one.records)  # worldwide rows (.HK, .L, ...)
    long = r.dividends_calendar(date(2014, 1, 1), date(2024, 6, 30))
    assert len(sim.truth.dividends_calendar(date(2014, 1, 1), date(2024, 6, 30))) > 4000
    assert long.at_cap and len(long.records) == 4000


def test_profile_employees_as_int_and_empty_for_dotted_ticker(sim, make):
    r = make()
    parsed = r.profile("BRK-B")
    truth = sim.truth.profile("BRK-B")
    assert isinstance(truth["fullTimeEmployees"], str)
    (profile,) = parsed.records
    assert profile.full_time_employees == int(truth["fullTimeEmployees"])
    assert profile == Profile.model_validate(truth)
    assert isinstance(profile.is_etf, bool) and profile.price_range == truth["range"]
    assert r.profile("BRK.B").records == [] and r.profile("NOPEZ").records == []


def test_profile_bulk_parts_until_the_400_past_the_end(tmp_path):
    with SimulatorServer(sim_config(profile_bulk_part_size=100)) as s:
        r = FMPResource(api_key=KEY, base_url=s.base_url, plan="ultimate", limiter_state=str(tmp_path / "l.sqlite"),
                        bulk_calls_per_min=60_000, backoff_base_s=0.01)
        try:
            parts, part = [], 0
            while (parsed := r.profile_bulk(part, keep=set(s.truth.symbols()).__contains__)) is not None:
                parts.append(parsed)
                part += 1
        finally:
            r.close()
        served = s.truth._profile_bulk_cached()
        assert part == -(-len(served) // 100) >= 3
        log = settled(s, r, path="profile-bulk")
        assert [e["status"] for e in log] == [200] * part + [400]
        records = [rec for p in parts for rec in p.records]
        assert not any(p.rejects for p in parts)
        assert sorted(rec.symbol for rec in records) == sorted(s.truth.symbols())
        for rec in records:
            truth = Profile.model_validate(s.truth.profile(rec.symbol))
            assert rec == truth


# =========================================================================== errors
def test_invalid_key_fails_fast_without_retry(sim, make):
    r = make(api_key=WRONG_KEY, max_retries=6, backoff_base_s=1.0)
    with pytest.raises(FMPAuthError) as info:
        r.profile("BRK-B")
    assert "FMP_API_KEY" in str(info.value) and info.value.status == 401
    log = settled(sim, r)
    assert len(log) == 1 and log[0]["status"] == 401
    assert [c.outcome for c in r.calls.since()] == ["401"]


def test_plan_error_on_premium_for_bulk(tmp_path):
    with SimulatorServer(sim_config(plan="premium", rate_limit_per_min=None)) as s:
        r = FMPResource(api_key=KEY, base_url=s.base_url, plan="premium", limiter_state=str(tmp_path / "l.sqlite"),
                        bulk_calls_per_min=60_000)
        try:
            with pytest.raises(FMPPlanError) as info:
                r.eod_bulk(date(2024, 7, 9))
            assert info.value.status == 402 and "FMP_PLAN" in str(info.value)
            assert [e["status"] for e in settled(s, r)] == [402]  # not retried
        finally:
            r.close()


def test_query_error_and_legacy_path(sim, make):
    r = make()
    with pytest.raises(FMPQueryError) as info:
        r.dividends("")
    assert info.value.status == 400 and "Query Error" in str(info.value)
    legacy = make(base_url=sim.root_url + "/api/v3")
    with pytest.raises(FMPForbiddenError) as info:
        legacy.profile("BRK-B")
    assert info.value.status == 403 and "Legacy Endpoint" in str(info.value)
    assert [e["status"] for e in settled(sim, r, legacy)] == [400, 403]


def test_429_storm_ends_in_success_with_backoff(sim, make):
    r = make(max_retries=25)
    sim.faults.update({"limit_reach_p": 0.5})
    symbols = some_symbols(sim, 30)
    got = [r.profile(s) for s in symbols]
    assert [p.records[0].symbol for p in got] == symbols
    assert all(p.records[0] == Profile.model_validate(sim.truth.profile(s)) for p, s in zip(got, symbols))
    wire_429 = sum(1 for e in settled(sim, r, path="profile") if e["status"] == 429)
    stats = r.calls.stats()["profile"]
    assert wire_429 >= 5
    assert stats.rate_limited == wire_429 and stats.retries == wire_429
    assert stats.succeeded == 30 and stats.calls == 30 + wire_429


def test_truncated_csv_is_retried_and_ends_in_correct_data(sim, make):
    r = make(max_retries=30)
    sim.faults.update({"truncate_p": 0.5})
    us = set(sim.truth.symbols())
    days = sim.truth.sessions(date(2024, 5, 1), date(2024, 7, 9))
    for day in days:
        parsed = r.eod_bulk(day, keep=us.__contains__)
        assert not parsed.rejects
        expected = {t["symbol"]: (t["open"], t["low"], t["high"], t["close"]) for t in sim.truth.bulk_eod(day)}
        assert {b.symbol: (b.open, b.low, b.high, b.close) for b in parsed.records} == expected
        if outcomes(r)["truncated"]:
            break
    settled(sim, r)
    assert faults_seen(sim, "eod-bulk")["truncate"] >= 1
    assert outcomes(r)["truncated"] == faults_seen(sim, "eod-bulk")["truncate"]


def test_malformed_json_is_retried_and_ends_in_correct_data(sim, make):
    r = make(max_retries=30)
    sim.faults.update({"malformed_p": 0.5})
    symbol = old_symbol(sim)
    for year in range(2000, 2024):
        start, end = date(year, 1, 1), date(year, 12, 31)
        parsed = r.historical_prices(symbol, start, end)
        assert parsed.records == [HistoricalBar.model_validate(x) for x in sim.truth.eod_bars(symbol, start, end)]
        if outcomes(r)["malformed"] >= 2:
            break
    settled(sim, r)
    assert faults_seen(sim)["malformed"] >= 2
    assert outcomes(r)["malformed"] == faults_seen(sim)["malformed"]


@pytest.mark.parametrize("fault, settings, outcome_names", [
    ("error", {"error_rate": 0.5}, {"5xx"}),
    ("reset", {"reset_p": 0.5}, {"connection", "truncated"}),
    ("stall", {"stall_p": 0.3, "stall_s": 2.0}, {"timeout"}),
])
def test_transient_faults_are_retried(sim, make, fault, settings, outcome_names):
    r = make(max_retries=30, timeout_s=0.5)
    sim.faults.update(settings)
    symbols = some_symbols(sim, 40)
    for s in symbols:
        (profile,) = r.profile(s).records
        assert profile == Profile.model_validate(sim.truth.profile(s))
        if sum(n for name, n in outcomes(r).items() if name != "ok") >= 2:
            break
    settled(sim, r)  # a stalled request is logged only when its stall ends
    seen = sum(n for name, n in faults_seen(sim).items() if name.startswith(fault))
    assert seen >= 2
    failed_attempts = {name: n for name, n in outcomes(r).items() if name != "ok"}
    assert set(failed_attempts) <= outcome_names and sum(failed_attempts.values()) == seen


def test_retries_give_up_with_a_transient_error(sim, make):
    r = make(max_retries=2)
    symbol = some_symbols(sim, 1)[0]
    sim.faults.update({"failing_symbols": [symbol]})
    with pytest.raises(FMPTransientError) as info:
        r.profile(symbol)
    assert "3 attempts" in str(info.value)
    assert [e["status"] for e in settled(sim, r, path="profile")] == [500, 500, 500]


# =========================================================================== shared limit across processes
WORKER = textwrap.dedent("""
    import sys, threading, time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path
    from stock_assets.fmp import FMPResource
    base_url, key, state, go, ready, duration, symbols = sys.argv[1:8]
    r = FMPResource(api_key=key, base_url=base_url, plan="ultimate", rate_limit_per_min=1200,
                    limiter_state=state, max_in_flight=4, backoff_base_s=0.05)
    symbols = symbols.split(",")
    # Open the shared limiter and warm one connection per thread before the
    # start signal: measure the steady state, not TCP connects.
    r._ensure_started()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(r.profile, symbols[:4]))
    Path(ready).write_text("ok")
    while not Path(go).exists():
        time.sleep(0.005)
    start = float(Path(go).read_text())
    time.sleep(max(0.0, start - time.time()))
    end = start + float(duration)
    count = [0]
    def work(k):
        i = k
        while time.time() < end:
            r.profile(symbols[i % len(symbols)])
            i += 4
            count[0] += 1
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    r.close()
    print(count[0])
""")


@pytest.fixture(params=["sqlite", "redis"])
def limiter_state(request, tmp_path) -> str:
    """Where processes sharing a key keep its limit: one host's SQLite file, or Redis for many hosts
    (then the processes share nothing else: each works in a folder of its own)."""
    if request.param == "sqlite":
        return str(tmp_path / "shared.sqlite")
    return request.getfixturevalue("redis").url()


def test_four_processes_sharing_a_key_stay_under_its_limit(tmp_path, limiter_state):
    limit, duration, procs = 1200, 8.0, 4
    pace = pace_rates(limit * DEFAULT_PACE_FRACTION)  # the client's pace
    per_sec = pace[0].limit
    with SimulatorServer(sim_config(rate_limit_per_min=limit)) as s:
        symbols = ",".join(some_symbols(s, 40))
        go = tmp_path / "go"
        workers = [subprocess.Popen(
            [sys.executable, "-c", WORKER, s.base_url, KEY, limiter_state, str(go),
             str(tmp_path / f"ready{k}"), str(duration), symbols],
            cwd=ROOT_PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(procs)]
        try:
            deadline = time.monotonic() + 60
            while not all((tmp_path / f"ready{k}").exists() for k in range(procs)):
                assert all(w.poll() is None for w in workers), [w.communicate() for w in workers]
                assert time.monotonic() < deadline, "workers did not start"
                time.sleep(0.02)
            start = time.time() + 1.0  # after the warm-up calls' second
            # Written aside and renamed: a worker polling for `go` must never read it half-written.
            (tmp_path / "go.tmp").write_text(repr(start))
            (tmp_path / "go.tmp").rename(go)
            results = [w.communicate(timeout=60) for w in workers]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
        assert all(w.returncode == 0 for w in workers), [err for _, err in results]
        made = sum(int(out.strip()) for out, _ in results)
        deadline = time.monotonic() + 10
        while len(log := [e for e in s.requests("profile") if e["t"] >= start - 0.05]) < made:
            assert time.monotonic() < deadline, (len(log), made)
            time.sleep(0.01)
    assert len(log) == made
    assert all(e["status"] == 200 for e in log), Counter(e["status"] for e in log)
    assert len(log) <= limit  # the run is shorter than the minute window: overall count
    times = sorted(e["t"] for e in log)
    # No check of the busiest second: the server stamps requests that waited in its backlog
    # together, and on a loaded 2-core machine one second counted 35 of a 20/s pace with the limit
    # shared (four unshared limiters: 36). What sharing means is the rate below: four processes
    # with a limiter each would make four times the pace.
    rate = sum(1 for t in times if t < start + duration) / duration
    # A floor, not the benchmark's figure (bench/bench_client.py measures 0.99 on a
    # quiet machine): CI runs this beside other tests on 2 cores, and the point
    # here is that four processes share the pace rather than each getting a slice.
    assert rate >= 0.5 * per_sec, f"{rate:.1f}/s is too far under the pace of {per_sec}/s"
    assert rate <= 1.1 * per_sec, f"{rate:.1f}/s is over the pace of {per_sec}/s"


def test_pace_rates_spread_the_minute():
    per_sec, per_min = pace_rates(3000 * 0.9)
    assert (per_sec.limit, per_sec.interval, per_min.limit, per_min.interval) == (45, 1000, 2700, 60_000)
    per_sec, per_min = pace_rates(0.5)
    assert per_sec.limit == 1 and per_min.limit == 1


def test_limiter_blocks_at_the_per_second_cap(tmp_path):
    limiter = SharedRateLimiter(pace_rates(600), KEY, str(tmp_path / "l.sqlite"))  # 10/s
    try:
        started = time.monotonic()
        waits = [limiter.acquire() for _ in range(25)]
        elapsed = time.monotonic() - started
    finally:
        limiter.close()
    assert sum(w > 0.05 for w in waits[:10]) == 0  # the first second's allowance is free
    assert elapsed >= 1.9  # 25 calls at 10/s: two more windows (a floor: a loaded machine only adds)


# =========================================================================== adaptive chunks
def fetch_all(chunks, on_chunk=lambda chunk: None) -> FetchSummary:
    """Take every chunk (as an asset writes them), then the fetch's summary."""
    summary = FetchSummary(total=0)
    for chunk in chunks:
        on_chunk(chunk)
        summary = chunk.summary
    return summary


class WorkClock:
    """Time as the workload sets it: every finished fetch adds its cost, however fast the machine.

    Chunks are then sized from the workload's own throughput, never from a
    loaded machine's scheduling (a main thread woken late finds a burst of
    results, and a wall clock would read a burst as speed).
    """

    def __init__(self, seconds_per_item: float):
        self.cost, self.now, self._lock = seconds_per_item, 0.0, threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def fetched(self, value):
        with self._lock:
            self.now += self.cost
        return value


def test_chunks_grow_on_a_fast_workload(sim, make):
    r = make(max_in_flight=8)
    symbols = some_symbols(sim, 100)
    items = [symbols[i % 100] for i in range(800)]
    clock = WorkClock(0.005)  # 200 items/s
    sizer = ChunkSizer(target_s=1.0, min_size=5, max_size=2000, initial=10, clock=clock)
    summary = fetch_all(fetch_chunks(items, lambda s: clock.fetched(r.profile(s).records[0]), max_in_flight=8,
                                     sizer=sizer))
    assert summary.succeeded == 800 and not summary.failures
    sizes = summary.chunk_sizes
    assert sizes[0] == 10
    assert max(sizes) >= 50, sizes  # grew toward rate x target
    rate = 800 / summary.elapsed_s
    assert 0.3 * rate <= sizer.rate * sizer.target_s <= 3 * rate


def test_chunks_shrink_on_a_slow_workload(sim, make):
    r = make(max_in_flight=4)
    symbols = some_symbols(sim, 100)
    clock = WorkClock(0.025)  # 40 items/s: 4 in flight, 0.1 s each
    sizer = ChunkSizer(target_s=0.25, min_size=2, max_size=2000, initial=40, clock=clock)
    summary = fetch_all(fetch_chunks(symbols, lambda s: clock.fetched(r.profile(s)), max_in_flight=4, sizer=sizer))
    assert summary.succeeded == 100
    sizes = summary.chunk_sizes
    assert sizes[0] == 40
    assert all(size <= 20 for size in sizes[1:]), sizes  # ~40 items/s x 0.25 s = ~10
    assert sizer.size <= 20


def test_no_barrier_a_slow_symbol_holds_back_only_itself(sim, make):
    r = make(max_in_flight=4)
    symbols = some_symbols(sim, 60)
    slow = symbols[0]
    sim.faults.update({"slow_symbols": [slow], "slow_symbol_factor": 40})  # 4 s for the slow one
    arrivals: list[tuple[float, list[str]]] = []
    started = time.monotonic()
    summary = fetch_all(fetch_chunks(symbols, lambda s: r.profile(s), max_in_flight=4,
                                     sizer=ChunkSizer(min_size=10, max_size=10, initial=10)),
                        lambda c: arrivals.append((time.monotonic() - started, [item for item, _ in c.results])))
    assert summary.succeeded == 60
    slow_at = next(t for t, items in arrivals if slow in items)
    assert slow_at >= 3.5  # its 4 s of latency: a floor, whatever the machine
    assert slow in arrivals[-1][1]  # it came last...
    before = sum(len(items) for t, items in arrivals if t < slow_at)
    assert before >= 50  # ...and every other symbol was delivered while it was still in flight


def test_fetching_goes_on_while_the_caller_writes_a_chunk(sim, make):
    """The caller's first "write" lasts until every other item has been fetched: it returns only
    if the fetchers went on meanwhile (they used to stop after the few calls queued ahead)."""
    r = make(max_in_flight=4)
    symbols = some_symbols(sim, 60)
    fetched, all_fetched = [], threading.Event()

    def fetch(symbol):
        profile = r.profile(symbol)
        fetched.append(symbol)
        if len(fetched) == len(symbols):
            all_fetched.set()
        return profile

    chunks = fetch_chunks(symbols, fetch, max_in_flight=4, sizer=ChunkSizer(min_size=10, max_size=10, initial=10))
    first = next(chunks)
    assert len(first.results) == 10
    assert all_fetched.wait(timeout=60), f"fetching stopped during the write: {len(fetched)} of 60 fetched"
    rest = list(chunks)
    assert sum(len(c.results) for c in [first, *rest]) == 60


def test_failing_symbol_is_reported_while_the_others_succeed(sim, make):
    r = make(max_retries=2)
    symbols = some_symbols(sim, 30)
    bad = symbols[7]
    sim.faults.update({"failing_symbols": [bad]})
    delivered: dict[str, Profile] = {}
    summary = fetch_all(r.fetch_chunks(symbols, lambda s: r.profile(s).records[0], label="profiles"),
                        lambda c: delivered.update(dict(c.results)))
    assert summary.succeeded == 29 and [f.item for f in summary.failures] == [bad]
    assert summary.failures[0].error.startswith("FMPTransientError") and "3 attempts" in summary.failures[0].error
    assert set(delivered) == set(symbols) - {bad}
    assert all(p == Profile.model_validate(sim.truth.profile(s)) for s, p in delivered.items())


def test_fatal_error_stops_fetch_chunks_at_once(sim, make):
    r = make(api_key=WRONG_KEY, max_in_flight=4)
    delivered = []
    with pytest.raises(FMPAuthError):
        fetch_all(r.fetch_chunks(some_symbols(sim, 300), lambda s: r.profile(s), label="profiles"),
                  delivered.append)
    assert len(settled(sim, r)) <= 2 * 4  # at most what was in flight, not one call per item
    assert not delivered


# =========================================================================== the key never leaks
def test_the_key_never_leaks(sim, make, caplog, tmp_path):
    good = make(max_retries=3, timeout_s=0.5)
    bad = make(api_key=WRONG_KEY)
    # Start both before raising log levels: registering a key quiets the
    # transport loggers, and this test wants them at DEBUG.
    good._ensure_started(), bad._ensure_started()
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", *redaction._TRANSPORT_LOGGERS, "stock_assets"):
        caplog.set_level(logging.DEBUG, logger=name)
    raised: list[BaseException] = []
    symbols = some_symbols(sim, 12)

    good.profile(symbols[0])
    good.eod_bulk(date(2024, 7, 9))
    fetch_all(good.fetch_chunks(symbols, lambda s: good.profile(s), label="profiles",
                                log=logging.getLogger("stock_assets.test").info))
    sim.faults.update({"error_rate": 0.3, "reset_p": 0.2, "malformed_p": 0.2, "stall_p": 0.1, "stall_s": 1.0,
                       "limit_reach_p": 0.1})
    for s in symbols:  # retried calls (some may give up: that is another forced failure)
        try:
            good.profile(s)
        except FMPError as error:  # gave up: FMPTransientError or FMPRateLimitError
            raised.append(error)
    sim.faults.reset()
    sim.faults.update({"failing_symbols": [symbols[1]]})
    for call in (lambda: bad.profile(symbols[0]), lambda: good.profile(symbols[1]), lambda: good.dividends(""),
                 lambda: fetch_all(bad.fetch_chunks(symbols, bad.profile, label="x"))):
        try:
            call()
        except Exception as error:  # noqa: BLE001 - every exception is inspected
            raised.append(error)
    summary = fetch_all(good.fetch_chunks(symbols, lambda s: good.profile(s), label="profiles"))
    assert summary.failures  # the failing symbol, with its error text

    assert {type(e) for e in raised} >= {FMPAuthError, FMPTransientError, FMPQueryError}
    assert any(r.name.startswith(("httpx", "httpcore")) for r in caplog.records), "transport logs captured"
    assert any(f["fault"] for f in sim.requests()), "retried calls really happened"
    texts = {
        "logs": caplog.text + "\n".join(r.getMessage() for r in caplog.records),
        "exceptions": "\n".join(str(e) + repr(e) + "".join(traceback.format_exception(e)) for e in raised),
        "failures": "\n".join(f.error for f in summary.failures),
        "resources": repr(good) + str(good) + repr(bad) + str(bad),
        "call log": repr(good.calls.since()) + repr(bad.calls.since()) + repr(good.calls.stats()),
        "request log": json.dumps(sim.requests()),
    }
    limiter_file = tmp_path / "limiter.sqlite"
    with sqlite3.connect(limiter_file) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = [repr(db.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables]
    assert tables
    texts["limiter tables"] = "\n".join(tables + rows)
    texts["limiter file"] = limiter_file.read_bytes().decode("latin-1")
    for where, text in texts.items():
        for secret in (KEY, WRONG_KEY):
            assert secret not in text, f"the key leaked into the {where}"
