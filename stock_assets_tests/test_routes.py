"""Routes and call counts per plan, holidays, 402 fallbacks, unclosed sessions,
rejected rows, idempotent re-runs and the failure threshold.

Real parts only: the FMP simulator over HTTP, a DuckDB file, and a persistent
Dagster instance; every partition runs through `dagster.materialize`.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import string
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from stock_assets import clock, trading
from stock_assets.defs.assets import assets_for
from stock_assets.config import Config
from stock_assets.defs.assets.prices import history_start
from stock_assets.defs.partitions import latest_session_day, shard_of, symbol_shards, trading_days
from stock_assets_tests.conftest import configured_trading_days
from stock_assets.defs.resources import SyncSettings
from stock_assets_tests.conftest import PINNED_NOW, make_platform, set_clock

HOLIDAYS = ["2026-09-07", "2026-11-26"]  # Labor Day; Thanksgiving
PER_SYMBOL = ("historical-price-eod/full", "profile", "dividends")


# ----------------------------------------------------------------------------- helpers
def requests(platform) -> list[dict]:
    """The simulator's request log once it has stopped growing."""
    return platform.sim.settled_requests(quiet_s=0.15, timeout_s=5.0)


def calls(platform, path: str | None = None) -> int:
    return sum(1 for r in requests(platform) if path is None or r["path"] == path)


def paths(platform) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in requests(platform):
        out[r["path"]] = out.get(r["path"], 0) + 1
    return out


def run(platform, asset: str, partition: str | None = None, resources: dict | None = None,
        refresh: bool = False, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """Materialize one asset (one partition) on the persistent instance; the request log starts empty."""
    platform.sim.clear_requests()
    resources = dict(resources or platform.resources())
    if refresh:  # fetch again what is stored: a setting of the run
        resources["settings"] = SyncSettings(**{**resources["settings"].model_dump(), "refresh": True})
    return dg.materialize(assets_for(Config.from_env()), selection=[asset], partition_key=partition,
                          instance=platform.instance(), resources=resources, raise_on_error=raise_on_error)


def metadata(platform, asset: str, partition: str | None = None) -> dict:
    """The latest materialization's metadata, as stored in the instance."""
    records = platform.instance().fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset),
                              asset_partitions=[partition] if partition else None), limit=1).records
    assert records, f"no materialization of {asset} [{partition}]"
    materialization = records[0].asset_materialization
    return {k: v.value for k, v in materialization.metadata.items()}


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    failures = result.get_step_failure_events()
    assert failures, "the run did not fail"
    data = failures[0].step_failure_data
    parts = [data.error.message if data.error else ""]
    if data.user_failure_data is not None:
        parts.append(data.user_failure_data.description or "")
    return "\n".join(parts)


def universe(platform) -> list[str]:
    return [s for (s,) in platform.sql("SELECT symbol FROM market.symbols ORDER BY symbol")]


def by_shard(platform) -> dict[str, list[str]]:
    shards: dict[str, list[str]] = {}
    for symbol in universe(platform):
        shards.setdefault(shard_of(symbol), []).append(symbol)
    return shards


def small_universe(platform, tmp_path, shards: int = 2) -> list[str]:
    """Materialize `symbols` restricted (symbol_file) to the simulator's `shards` biggest shards."""
    groups: dict[str, list[str]] = {}
    for row in platform.sim.truth.universe():
        if row["isActivelyTrading"] and not row["isFund"]:
            groups.setdefault(shard_of(row["symbol"]), []).append(row["symbol"])
    chosen = sorted(s for g in sorted(groups.values(), key=len)[-shards:] for s in g)
    symbol_file = tmp_path / "symbols.txt"
    symbol_file.write_text("\n".join(chosen))
    run(platform, "symbols", resources=platform.resources(symbol_file=str(symbol_file)))
    assert universe(platform) == chosen
    return chosen


def past_session() -> str:
    """A session that closed, but is not the latest closed one (batch-quote does not apply)."""
    latest = trading.last_closed_session()
    return trading.calendar().previous_session(latest).date().isoformat()


def latest() -> str:
    day = trading.last_closed_session().isoformat()
    assert day in trading_days.get_partition_keys(current_time=trading.now_utc())  # the clock is pinned after 17:00
    return day


@pytest.fixture()
def ultimate(tmp_path, monkeypatch):
    platform = make_platform(tmp_path, monkeypatch, plan="ultimate")
    yield platform
    platform.sim.stop()


# ----------------------------------------------------------------------------- 1. calls per plan
def test_universe_costs_at_most_ten_calls(platform):
    run(platform, "symbols")
    assert 1 <= calls(platform) <= 10
    assert set(paths(platform)) == {"company-screener", "delisted-companies", "symbol-change"}
    assert paths(platform)["delisted-companies"] == 1
    listed = {r["symbol"] for r in platform.sim.truth.universe() if r["isActivelyTrading"] and not r["isFund"]}
    assert set(universe(platform)) == listed and listed


def test_latest_session_on_ultimate_is_one_eod_bulk_call_and_two_to_read_revisions(ultimate):
    run(ultimate, "symbols")
    run(ultimate, "daily_prices", latest())
    # The day's file, and the three sessions before it read again (FMP revises recent bars).
    # (two and five sessions back: each session is read again twice, and a revision FMP makes within
    # five sessions of its bar is stored within five)
    asked = sorted(r["params"]["date"] for r in requests(ultimate))
    assert asked == ["2026-11-27", "2026-12-02", latest()]
    meta = metadata(ultimate, "daily_prices", latest())
    assert meta["route"] == "eod-bulk" and meta["api_calls"] == 3
    (stored,), = ultimate.sql("SELECT count(*) FROM market.prices WHERE date = ?", [latest()])
    assert stored == len(universe(ultimate)) == meta["rows_written"]


def test_a_listed_symbol_without_a_bar_anywhere_is_asked_its_history_on_a_backoff(ultimate, monkeypatch):
    """Listed, yet FMP has no bar for it (in neither eod-bulk nor its history): the day is complete
    without it, named; it is not asked its history again until its backoff has passed (1 day, then
    2, 4 ...), however often the day is synced."""
    run(ultimate, "symbols")
    ghost = "ZZQA"  # a symbol the simulator has no bar for
    with ultimate.writer() as conn:
        conn.execute("INSERT INTO market.symbols (symbol, shard, is_actively_trading, updated_at) "
                     "VALUES (?, ?, TRUE, ?)", [ghost, shard_of(ghost), clock.now().replace(tzinfo=None)])
    day = latest()

    def history_asked() -> list[str]:
        return [r["params"]["symbol"] for r in requests(ultimate) if r["path"] == "historical-price-eod/full"]

    def no_bar_reason() -> str:
        (reason,), = ultimate.sql("SELECT reason FROM market.bars_absent WHERE symbol = ? AND date = ?",
                                  [ghost, day])
        return reason

    assert run(ultimate, "daily_prices", day).success
    assert history_asked() == [ghost]
    assert "answered no bar" in no_bar_reason()
    # The same day again, an hour later: the bulk file is read (it might hold the bar now), the
    # history is not; the day stays complete, the symbol named as resting.
    set_clock(monkeypatch, PINNED_NOW + dt.timedelta(hours=1))
    assert run(ultimate, "daily_prices", day).success
    assert paths(ultimate) == {"eod-bulk": 3} and history_asked() == []
    assert "backoff" in no_bar_reason()
    # A day later its rest is over: asked once more, then resting two days.
    set_clock(monkeypatch, PINNED_NOW + dt.timedelta(days=1, hours=1))
    assert run(ultimate, "daily_prices", day).success and history_asked() == [ghost]
    assert ultimate.sql("SELECT attempts FROM market.empty_answers WHERE dataset = 'prices' AND symbol = ?",
                        [ghost]) == [(2,)]
    set_clock(monkeypatch, PINNED_NOW + dt.timedelta(days=2, hours=1))
    assert run(ultimate, "daily_prices", day).success and history_asked() == []


def test_a_bar_by_any_route_ends_a_rest_and_a_past_session_asks_a_resting_symbol(platform):
    """A symbol resting after an empty history (a halt) that trades again: its quote's bar ends the
    rest; a past session it lacks is asked its history whatever the rest (nothing else would fetch it)."""
    run(platform, "symbols")
    symbol = universe(platform)[3]
    past = past_session()

    def rest() -> None:
        with platform.writer() as conn:
            conn.execute("DELETE FROM market.empty_answers WHERE dataset = 'prices' AND symbol = ?", [symbol])
            conn.execute("INSERT INTO market.empty_answers (dataset, symbol, attempts, asked_at) "
                         "VALUES ('prices', ?, 4, ?)", [symbol, clock.now().replace(tzinfo=None) - dt.timedelta(days=2)])

    rest()
    run(platform, "daily_prices", latest())
    assert platform.sql("SELECT count(*) FROM market.empty_answers WHERE symbol = ?", [symbol]) == [(0,)]
    rest()
    run(platform, "daily_prices", past)
    assert symbol in [r["params"]["symbol"] for r in requests(platform) if r["path"] == "historical-price-eod/full"]
    (close,), = platform.sql("SELECT close FROM market.prices WHERE symbol = ? AND date = ?", [symbol, past])
    (served,) = [b["close"] for b in platform.sim.truth.eod_bars(symbol, dt.date.fromisoformat(past),
                                                                 dt.date.fromisoformat(past))]
    assert close == served


def test_latest_session_on_premium_is_batched_quotes(platform):
    run(platform, "symbols")
    n = len(universe(platform))
    run(platform, "daily_prices", latest())
    assert paths(platform) == {"batch-quote": math.ceil(n / platform.fmp().quote_batch_size)}
    assert metadata(platform, "daily_prices", latest())["route"] == "batch-quote"

    # The batch size drives the count: ceil(U / size) calls, every symbol asked once.
    resources = {**platform.resources(), "fmp": platform.fmp(quote_batch_size=16)}
    run(platform, "daily_prices", latest(), resources=resources, refresh=True)
    log = requests(platform)
    assert [r["path"] for r in log] == ["batch-quote"] * math.ceil(n / 16)
    asked = [s for r in log for s in r["params"]["symbols"].split(",")]
    assert sorted(asked) == universe(platform)
    # The quotes taken after the close stand for that session's bars (provisional: the official
    # end-of-day bar can differ, by the closing auction and the consolidated volume), marked so.
    day = trading.last_closed_session()
    for quote in platform.sim.truth.quotes(universe(platform)[:5]):
        got = platform.sql("SELECT close, volume, source FROM market.prices WHERE symbol = ? AND date = ?",
                           [quote["symbol"], day])
        assert got == [(quote["price"], quote["volume"], "batch-quote")], quote["symbol"]


def test_with_fmps_bulk_throttle_on_no_bulk_call_is_refused_and_the_day_is_complete(ultimate):
    """FMP answers a bulk call that comes too soon after the last with a 200 carrying `Limit Reach`:
    the client paces its bulk calls under the throttle (here 1.5 s; the client 2 s apart)."""
    ultimate.sim.config.bulk_min_interval_s = 1.5
    paced = {**ultimate.resources(), "fmp": ultimate.fmp(bulk_calls_per_min=30)}
    run(ultimate, "symbols", resources=paced)
    parts = [(r["params"]["part"], r["status"]) for r in requests(ultimate) if r["path"] == "profile-bulk"]
    # Each part once, CSV, to the part past the last (400): a refused call would be asked again.
    assert [part for part, _ in parts] == [str(k) for k in range(len(parts))]
    assert [status for _, status in parts] == [200] * (len(parts) - 1) + [400]
    run(ultimate, "daily_prices", latest(), resources=paced)
    bulk = [r for r in requests(ultimate) if r["path"] == "eod-bulk"]
    assert len(bulk) == 3  # the day and two sessions back, each once
    assert all(r["status"] == 200 and r["bytes"] > 1000 for r in bulk)  # CSV, not the Limit Reach body
    (stored,), = ultimate.sql("SELECT count(*) FROM market.prices WHERE date = ?", [latest()])
    assert stored == len(universe(ultimate))


def test_past_day_on_premium_is_one_call_per_symbol_unless_history_stored_it(platform, tmp_path):
    symbols = small_universe(platform, tmp_path, shards=2)
    day = past_session()
    run(platform, "daily_prices", day)
    log = requests(platform)
    assert {r["path"] for r in log} == {"historical-price-eod/full"}
    assert sorted(r["params"]["symbol"] for r in log) == symbols
    # Each call reaches through the latest session (the pinned clock's Friday): one call a symbol
    # fills every session since, whose runs then find their bars stored.
    latest_day = PINNED_NOW.date().isoformat()
    assert all(r["params"]["from"] == day and r["params"]["to"] == latest_day for r in log)
    assert metadata(platform, "daily_prices", day)["route"] == "historical-price-eod/full"
    run(platform, "daily_prices", latest_day)
    assert calls(platform) == 0

    # price_history of every shard stores that day's bars: the day then costs nothing.
    with platform.writer() as conn:
        conn.execute("DELETE FROM market.prices")
    for shard in by_shard(platform):
        run(platform, "price_history", shard)
    (stored,), = platform.sql("SELECT count(DISTINCT symbol) FROM market.prices WHERE date = ?", [day])
    assert stored == len(symbols)
    run(platform, "daily_prices", day)
    assert calls(platform) == 0
    meta = metadata(platform, "daily_prices", day)
    assert meta["api_calls"] == 0
    assert meta["skipped_items/staleness filter"] == len(symbols)
    assert meta["saved_calls/staleness filter"] == len(symbols)


def test_dividends_day_is_one_calendar_call_and_one_for_the_three_sessions_before(platform):
    run(platform, "symbols")
    day = past_session()  # the pinned clock's Thursday, 2026-12-03
    run(platform, "dividends", day)
    # The day, and Monday to Wednesday again in one call, for the dividends FMP lists after their
    # ex-date (a few thousand rows worldwide: under the calendar's 4,000-row cap).
    asked = [(r["path"], r["params"]["from"], r["params"]["to"]) for r in requests(platform)]
    assert sorted(asked) == [("dividends-calendar", "2026-11-30", "2026-12-02"), ("dividends-calendar", day, day)]
    assert metadata(platform, "dividends", day)["route"] == "dividends-calendar"


def test_on_ultimate_one_bulk_download_gives_the_universe_and_every_full_profile(ultimate):
    """profile-bulk's parts, to the part past the last, are the universe's source and every full
    profile's: no screener page, no per-symbol profile, and no profile due in any shard."""
    run(ultimate, "symbols")
    asked = paths(ultimate)
    parts = sorted(int(r["params"]["part"]) for r in ultimate.sim.requests("profile-bulk"))
    assert asked == {"profile-bulk": len(parts), "delisted-companies": 1, "symbol-change": 1}
    assert parts == list(range(len(parts))) and ultimate.sim.requests("profile-bulk")[-1]["status"] == 400
    assert metadata(ultimate, "symbols")["route"] == "profile-bulk"
    # The universe: every listed symbol that has traded (the simulator's truth, not the code's).
    not_yet = {p["symbol"] for p in ultimate.sim.truth.pre_listings() if not p["trading"]}
    expected = sorted(set(ultimate.sim.truth.symbols()) - not_yet)
    assert universe(ultimate) == expected
    stored = {r[0]: r[1:] for r in ultimate.sql(
        "SELECT symbol, ceo, cik, full_time_employees, fetched_at FROM market.company_profiles")}
    assert sorted(stored) == expected
    # Both layers written: the screener layer's time too (the universe's write comes after the full one).
    assert ultimate.sql("SELECT count(*) FROM market.company_profiles WHERE screened_at IS NULL") == [(0,)]
    for symbol in expected[:25]:
        truth = ultimate.sim.truth.profile(symbol, settled=True)
        ceo, cik, employees, fetched_at = stored[symbol]
        served = [truth[k] or None for k in ("ceo", "cik", "fullTimeEmployees")]  # "" means no value
        assert [ceo, cik, employees] == served[:2] + [served[2] and int(served[2])], symbol
        assert fetched_at is not None
    for shard in sorted(by_shard(ultimate))[:3]:
        run(ultimate, "company_profiles", shard)
        assert calls(ultimate) == 0, shard
        meta = metadata(ultimate, "company_profiles", shard)
        assert meta["api_calls"] == 0 and meta["skipped_items/profile cycle"] == len(by_shard(ultimate)[shard])


def test_the_bulk_download_belongs_to_the_session_it_follows(ultimate, monkeypatch):
    """A download at 20:30 New York (after midnight UTC) serves that session; the next evening's sync
    downloads again (a download keyed by the UTC date was reused, and missed the day's changes)."""
    set_clock(monkeypatch, dt.datetime(2026, 12, 3, 20, 30, tzinfo=ZoneInfo("America/New_York")))
    run(ultimate, "symbols")
    first = calls(ultimate, "profile-bulk")
    assert first >= 2
    set_clock(monkeypatch, dt.datetime(2026, 12, 3, 23, 0, tzinfo=ZoneInfo("America/New_York")))
    run(ultimate, "symbols")  # the same session: the cached download
    assert calls(ultimate, "profile-bulk") == 0
    set_clock(monkeypatch, PINNED_NOW)  # Friday 18:00: the next session closed
    run(ultimate, "symbols")
    assert calls(ultimate, "profile-bulk") == first


def test_a_due_profile_the_bulk_file_lacks_is_fetched_on_its_own(ultimate):
    """A symbol the day's download lacks (listed after it, or one FMP's bulk file leaves out) still
    gets its full profile: one `profile` call, not a silent gap."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    run(ultimate, "symbols")
    shard, members = max(by_shard(ultimate).items(), key=lambda item: len(item[1]))
    absent = members[0]
    for part in (ultimate.db.parent / "cache" / "profile-bulk").glob("*/part-*.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.filter(pc.not_equal(table["symbol"], absent)), part)
    with ultimate.writer() as conn:
        conn.execute("DELETE FROM market.company_profiles WHERE symbol = ?", [absent])
    run(ultimate, "company_profiles", shard)
    assert paths(ultimate) == {"profile": 1}
    assert ultimate.sim.requests("profile")[0]["params"]["symbol"] == absent
    (ceo,), = ultimate.sql("SELECT ceo FROM market.company_profiles WHERE symbol = ?", [absent])
    assert ceo == ultimate.sim.truth.profile(absent, settled=True)["ceo"]
    meta = metadata(ultimate, "company_profiles", shard)
    assert meta["route"] == "profile" and "1 due profiles not in today's bulk file" in meta["notes"]


def test_full_profiles_on_premium_are_kept_until_due(platform):
    run(platform, "symbols")
    shard, members = max(by_shard(platform).items(), key=lambda item: len(item[1]))
    run(platform, "company_profiles", shard)
    log = requests(platform)
    assert {r["path"] for r in log} == {"profile"}
    assert sorted(r["params"]["symbol"] for r in log) == members

    run(platform, "company_profiles", shard)
    assert calls(platform) == 0
    meta = metadata(platform, "company_profiles", shard)
    assert meta["skipped_items/profile cycle"] == len(members) and meta["api_calls"] == 0

    # Seventy days later (the platform stopped for weeks) every full profile has been due for
    # longer than a cycle (24 sessions, 36 days at most): its turn was missed, it is due at once.
    platform.sim.clear_requests()
    with platform.writer() as conn:
        conn.execute("UPDATE market.company_profiles SET fetched_at = fetched_at - INTERVAL 70 DAY")
    run(platform, "company_profiles", shard)
    assert sorted(r["params"]["symbol"] for r in requests(platform)) == members


def test_refresh_turns_give_each_session_an_even_slice_in_a_few_shards():
    from stock_assets.defs.partitions import shard_of
    from stock_assets.profile_refresh import TURN, cycle_sessions, due_profiles
    from stock_assets.warehouse import ProfileState

    rng = random.Random(5)
    symbols = sorted({"".join(rng.choices(string.ascii_uppercase, k=rng.randint(1, 5))) for _ in range(5_000)})
    first = dt.date(2025, 11, 3)
    # Every full profile fetched on one day (a first load): afterwards, one even slice a session.
    fetched = {s: dt.datetime.combine(first, dt.time(22)) for s in symbols}
    cycle = cycle_sessions(30)
    assert cycle == 24
    share = (len(symbols) // cycle, len(symbols) // cycle + 1)
    # A year of sessions, its holidays included (Thanksgiving, Christmas and New Year in one cycle).
    sessions = trading.sessions_between(first + dt.timedelta(days=1), first + dt.timedelta(days=365))
    ages = []
    for day in sessions:
        states = [ProfileState(shard_of(s), s, fetched[s], None) for s in symbols]
        due = due_profiles(states, day, day, 30)
        assert set(due.values()) <= {TURN}, day  # never the missed-turn net: the turns come first
        if (day - first).days <= 30:
            assert not due, day  # nothing is fetched before it is older than 30 days...
        elif (day - first).days > 36:
            assert len(due) in share, day  # ...then each session's slice, evenly
        # A few shard runs (the daily sync: at most 8 runs with the universe, splits and session runs).
        assert len({shard_of(s) for s in due}) <= 5, day
        for s in due:
            ages.append(((day - fetched[s].date()).days, fetched[s].date() == first))
            fetched[s] = dt.datetime.combine(day, dt.time(22))
    # Each full profile fetched once it was older than 30 days, on the first turn after that: the
    # first load's within a cycle (24 sessions) of it, and from then on every 32 to 40 days.
    assert min(a for a, _ in ages) > 30
    assert max(a for a, after_first_load in ages if after_first_load) <= 30 + 37
    assert max(a for a, after_first_load in ages if not after_first_load) <= 40  # three holidays in a cycle: 39
    assert len(ages) >= len(symbols) * (len(sessions) - 22) // cycle


def test_a_full_profile_is_due_when_new_or_changed_on_the_screener_not_when_its_price_moves():
    from stock_assets.profile_refresh import MISSED_TURN, NEW, TURN, due_profiles, todays_slice
    from stock_assets.warehouse import ProfileState

    yesterday = dt.datetime(2026, 3, 9, 22)
    states = [ProfileState("A1", "AAA", None, None),
              ProfileState("B1", "BBB", yesterday, "sector: Technology -> Energy"),
              ProfileState("C1", "CCC", yesterday, None)]
    sessions = trading.sessions_between(dt.date(2026, 4, 1), dt.date(2026, 6, 30))
    turn = next(i for i, d in enumerate(sessions) if i >= 5 and "CCC" in todays_slice(states, d, 30))
    # CCC's price moves every day (the screener layer has it); its full profile is due 3 days
    # before its turn: only the turn brings the call, and a missed turn brings it the next day.
    states[2] = ProfileState("C1", "CCC", dt.datetime.combine(sessions[turn], dt.time(22)) - dt.timedelta(days=33),
                             None)
    reasons = [due_profiles(states, d, d, 30) for d in sessions[turn - 5:turn + 3]]
    assert all(r["AAA"] == NEW and r["BBB"] == "screener: sector: Technology -> Energy" for r in reasons)
    assert [r.get("CCC") for r in reasons] == [None] * 5 + [TURN, MISSED_TURN, MISSED_TURN]


# ----------------------------------------------------------------------------- 2. holidays
@pytest.mark.parametrize("holiday", HOLIDAYS)
def test_holiday_costs_no_call_and_says_market_closed(platform, holiday):
    assert holiday in configured_trading_days().get_partition_keys(current_time=trading.now_utc())
    run(platform, "symbols")
    for asset in ("daily_prices", "dividends"):
        result = run(platform, asset, holiday)
        assert result.success
        assert calls(platform) == 0, asset
        meta = metadata(platform, asset, holiday)
        assert meta["market"] == "closed" and meta["route"] == "market closed"
        assert meta["api_calls"] == 0 and meta["saved_calls/holiday skip"] >= 1
    status = platform.instance().get_status_by_partition(dg.AssetKey("daily_prices"), [holiday],
                                                         configured_trading_days())
    assert status[holiday] == dg.AssetPartitionStatus.MATERIALIZED


# ----------------------------------------------------------------------------- 3. 402 fallbacks
def test_batch_quote_402_falls_back_to_per_symbol_history(tmp_path, monkeypatch):
    platform = make_platform(tmp_path, monkeypatch, batch_quote_served=False)
    try:
        run(platform, "symbols")
        run(platform, "daily_prices", latest())
        count = paths(platform)
        assert count == {"batch-quote": 1, "historical-price-eod/full": len(universe(platform))}
        meta = metadata(platform, "daily_prices", latest())
        assert meta["route"] == "historical-price-eod/full"
        assert "batch-quote is not in the plan (402)" in meta["notes"]
        (stored,), = platform.sql("SELECT count(*) FROM market.prices WHERE date = ?", [latest()])
        assert stored == len(universe(platform))
    finally:
        platform.sim.stop()


def test_ultimate_client_on_a_premium_key_falls_back_from_bulk(platform):
    run(platform, "symbols")
    n = len(universe(platform))
    resources = {**platform.resources(), "fmp": platform.fmp(plan="ultimate")}
    run(platform, "daily_prices", latest(), resources=resources)
    assert paths(platform) == {"eod-bulk": 1, "batch-quote": math.ceil(n / platform.fmp().quote_batch_size)}
    meta = metadata(platform, "daily_prices", latest())
    assert meta["route"] == "batch-quote" and "eod-bulk is not in the plan (402)" in meta["notes"]

    run(platform, "daily_prices", past_session(), resources=resources)
    assert paths(platform) == {"eod-bulk": 1, "historical-price-eod/full": n}
    assert metadata(platform, "daily_prices", past_session())["route"] == "historical-price-eod/full"

    shard, members = max(by_shard(platform).items(), key=lambda item: len(item[1]))
    run(platform, "company_profiles", shard, resources=resources)
    assert paths(platform) == {"profile-bulk": 1, "profile": len(members)}
    meta = metadata(platform, "company_profiles", shard)
    assert meta["route"] == "profile" and "profile-bulk is not in the plan (402)" in meta["notes"]


# ----------------------------------------------------------------------------- 4. unclosed sessions
def test_a_session_that_has_not_closed_refuses_to_run(platform, monkeypatch):
    run(platform, "symbols")
    # The partitions definition does not even offer a day whose window has not opened.
    future = (trading.last_closed_session() + dt.timedelta(days=10)).isoformat()
    assert future not in trading_days.get_partition_keys(current_time=trading.now_utc())
    with pytest.raises(Exception, match=future):
        run(platform, "daily_prices", future)
    assert calls(platform) == 0

    # The asset's own check: the latest session's partition, run before that session's close.
    day = trading.last_closed_session()
    before_close = trading.session_close(day) - dt.timedelta(hours=2)
    set_clock(monkeypatch, before_close)
    for asset in ("daily_prices", "dividends"):
        result = run(platform, asset, day.isoformat(), raise_on_error=False)
        assert not result.success
        text = failure_text(result)
        assert f"The {day} session has not closed yet" in text and "after the close" in text, text
        assert calls(platform) == 0
    status = platform.instance().get_status_by_partition(
        dg.AssetKey("daily_prices"), [day.isoformat()], configured_trading_days())
    assert status[day.isoformat()] == dg.AssetPartitionStatus.FAILED


NEW_YORK = ZoneInfo("America/New_York")


@pytest.mark.parametrize("now, expected", [
    (dt.datetime(2026, 11, 30, 16, 30, tzinfo=NEW_YORK), "2026-11-27"),  # closed, window not open
    (dt.datetime(2026, 11, 30, 17, 1, tzinfo=NEW_YORK), "2026-11-30"),
    (dt.datetime(2026, 11, 27, 14, 0, tzinfo=NEW_YORK), "2026-11-25"),  # half day closed at 13:00
    (dt.datetime(2026, 11, 26, 18, 0, tzinfo=NEW_YORK), "2026-11-25"),  # Thanksgiving evening
    (dt.datetime(2026, 11, 28, 12, 0, tzinfo=NEW_YORK), "2026-11-27"),  # Saturday
    (dt.datetime(2026, 11, 30, 9, 0, tzinfo=NEW_YORK), "2026-11-27"),  # Monday before the open
])
def test_the_sync_day_is_a_closed_session_with_a_partition(now, expected):
    day = latest_session_day(now)
    assert day.isoformat() == expected
    assert day.isoformat() in trading_days.get_partition_keys(current_time=now)
    assert trading.is_session(day)
    trading.ensure_closed(day, now=now)


def test_ensure_closed():
    day = dt.date(2026, 11, 27)  # a half day: closes 13:00 ET (18:00 UTC)
    close = trading.session_close(day)
    assert close == dt.datetime(2026, 11, 27, 18, 0, tzinfo=dt.timezone.utc)
    with pytest.raises(trading.SessionNotClosedError, match="has not closed yet"):
        trading.ensure_closed(day, now=close - dt.timedelta(minutes=1))
    trading.ensure_closed(day, now=close)
    with pytest.raises(trading.SessionNotClosedError, match="in the future"):
        trading.ensure_closed(dt.date(2026, 11, 28), now=close)  # a Saturday, not yet come
    trading.ensure_closed(dt.date(2026, 11, 26), now=close)  # a holiday that has passed
    assert trading.last_closed_session(close - dt.timedelta(minutes=1)) == dt.date(2026, 11, 25)
    assert trading.last_closed_session(close) == day


# ----------------------------------------------------------------------------- 5. rejected rows
def test_rejected_rows_are_kept_with_their_reason(platform):
    run(platform, "symbols")
    shard, members = max(by_shard(platform).items(), key=lambda item: len(item[1]))
    bad = members[0]
    platform.sim.faults.invalid_row_symbols = frozenset({bad})

    result = run(platform, "price_history", shard)
    assert result.success
    end = trading.last_closed_session()
    truth_bars = platform.sim.truth.eod_bars(bad, history_start(SyncSettings(), end), end)
    (stored,), = platform.sql("SELECT count(*) FROM market.prices WHERE symbol = ?", [bad])
    assert len(truth_bars) > 200 and stored == len(truth_bars) - 1  # all but the spoiled row
    rejects = platform.sql("SELECT source, key, reason FROM market.rejected_rows WHERE key = ?", [bad])
    assert len(rejects) == 1
    source, key, reason = rejects[0]
    assert source == "historical-price-eod/full" and "close" in reason
    assert metadata(platform, "price_history", shard)["rejected_rows"] == 1
    # The others are whole.
    for symbol in members[1:]:
        (n,), = platform.sql("SELECT count(*) FROM market.prices WHERE symbol = ?", [symbol])
        assert n == len(platform.sim.truth.eod_bars(symbol, history_start(SyncSettings(), end), end))

    result = run(platform, "company_profiles", shard)
    assert result.success
    rejects = platform.sql(
        "SELECT reason FROM market.rejected_rows WHERE key = ? AND source = 'profile'", [bad])
    assert len(rejects) == 1 and "ipoDate" in rejects[0][0], rejects
    stored = {s for (s,) in platform.sql("SELECT symbol FROM market.company_profiles")}
    assert stored == set(members) - {bad}


# ----------------------------------------------------------------------------- 6. idempotence
DATA_COLUMNS = {
    "market.prices": "symbol, date, open, high, low, close, volume, source",
    "market.dividends": "symbol, ex_date, record_date, payment_date, declaration_date, dividend, "
                        "adj_dividend, frequency",
    "market.company_profiles": "symbol, company_name, full_time_employees, ipo_date, beta, market_cap",
    "market.rejected_rows": "source, key, reason, raw_hash",
}


def snapshot(platform) -> dict[str, list[tuple]]:
    return {t: platform.sql(f"SELECT {c} FROM {t} ORDER BY ALL") for t, c in DATA_COLUMNS.items()}


def test_running_a_partition_twice_leaves_the_warehouse_identical(platform):
    run(platform, "symbols")
    payers = {s for (s,) in platform.sql("SELECT symbol FROM market.symbols WHERE last_annual_dividend > 0")}
    shard, members = max(by_shard(platform).items(), key=lambda item: len(payers & set(item[1])))
    assert payers & set(members)
    platform.sim.faults.invalid_row_symbols = frozenset({sorted(payers & set(members))[0]})
    day_with_dividends = _day_with_dividends(platform)
    partitions = [("daily_prices", latest()), ("daily_prices", past_session()),
                  ("dividends", day_with_dividends), ("price_history", shard),
                  ("dividend_history", shard), ("company_profiles", shard)]
    for asset, partition in partitions:
        run(platform, asset, partition, refresh=True)
        first = snapshot(platform)
        run(platform, asset, partition, refresh=True)
        assert calls(platform) > 0  # refresh fetched again ...
        assert snapshot(platform) == first, (asset, partition)  # ... and changed nothing
    counts = {t: len(rows) for t, rows in snapshot(platform).items()}
    assert all(counts.values()), counts


def _day_with_dividends(platform) -> str:
    members = set(universe(platform))
    end = trading.last_closed_session()
    for day in reversed(trading.sessions_between(end - dt.timedelta(days=60), end)):
        rows = platform.sim.truth.dividends_calendar(day, day)
        if any(r["symbol"] in members for r in rows):
            return day.isoformat()
    pytest.skip("no dividend in the universe over the last 60 days")


# ----------------------------------------------------------------------------- 7. failure threshold
def test_failures_below_the_threshold_succeed_and_name_the_symbol(platform):
    run(platform, "symbols")
    shard, members = max(by_shard(platform).items(), key=lambda item: len(item[1]))
    assert len(members) >= 2
    broken = members[1]
    platform.sim.faults.failing_symbols = frozenset({broken})
    share = 1 / len(members)

    result = run(platform, "company_profiles", shard,
                 resources=platform.resources(max_failed_share=share + 0.01))
    assert result.success
    meta = metadata(platform, "company_profiles", shard)
    assert meta["failed_symbols"] == broken
    assert meta["items_failed"] == 1 and meta["items_succeeded"] == len(members) - 1

    result = run(platform, "company_profiles", shard, refresh=True, raise_on_error=False,
                 resources=platform.resources(max_failed_share=share - 0.01))
    assert not result.success
    assert f"1 of {len(members)} items failed" in failure_text(result)
    status = platform.instance().get_status_by_partition(
        dg.AssetKey("company_profiles"), [shard], symbol_shards)
    assert status[shard] == dg.AssetPartitionStatus.FAILED
