"""Shared fixtures: a simulator, a warehouse file and a persistent Dagster instance.

Every platform test runs the real parts: the FMP simulator over HTTP on a
loopback port, a DuckDB file, and a Dagster instance whose storage lives in a
DAGSTER_HOME folder configured by the project's own `dagster.yaml`.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
import uuid
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dagster as dg
import duckdb
import pandas
import pytest

from stock_assets import clock, trading

from stock_assets.fmp import FMPResource
from stock_assets.runs.plan import PlannedRun, plan_after_universe
from stock_assets.config import Config
from stock_assets.defs.resources import SyncSettings, settings_resource
from stock_assets.runs.runner import execute
from stock_assets.tags import SYNC_TAG
from fmp_simulator import Faults, SimConfig, SimulatorServer
from stock_assets.warehouse import WarehouseResource

PROJECT = Path(__file__).resolve().parents[1]
TEST_KEY = "test-key-5f1c9e"
# Enough symbols to fill a dozen shards (every path runs, a shard holds two or more), few enough
# that a first sync is a dozen runs: the suite runs dozens of first syncs.
SYMBOLS = 20
# Every test runs at a pinned instant (the platform's clock, `STOCK_ASSETS_NOW`, which the
# simulator follows too): a Friday evening two hours after the close, so no outcome depends on the
# day the suite runs. A test that needs another hour moves the clock (`set_clock`).
PINNED_NOW = dt.datetime(2026, 12, 4, 18, 0, tzinfo=clock.NEW_YORK)
TEST_TRADING_DAYS_START = (PINNED_NOW.date() - dt.timedelta(days=120)).isoformat()


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch):
    set_clock(monkeypatch, PINNED_NOW)


def set_clock(monkeypatch: pytest.MonkeyPatch, moment: dt.datetime) -> None:
    """Move the platform's clock, the simulator's (it reads the same one) and every process started after."""
    monkeypatch.setenv(clock.ENV, clock.setting(moment))


def configured_trading_days() -> dg.TimeWindowPartitionsDefinition:
    """The trading-day partitions the platform under test uses (from STOCK_ASSETS_START)."""
    from stock_assets.config import Config
    from stock_assets.defs.partitions import trading_days_from

    return trading_days_from(Config.from_env().trading_days_start)


@dataclass
class Platform:
    sim: SimulatorServer
    db: Path
    home: Path
    limiter: Path
    plan: str

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))

    @property
    def config(self) -> Config:
        """The configuration a command reads from the environment the test set."""
        return Config.from_env()

    def fmp(self, **overrides) -> FMPResource:
        config = dict(api_key=TEST_KEY, base_url=self.sim.base_url, plan=self.plan,
                      rate_limit_per_min=60_000, limiter_state=str(self.limiter),
                      backoff_base_s=0.05, backoff_max_s=0.5, max_retries=3, bulk_calls_per_min=600)
        return FMPResource(**{**config, **overrides})

    def warehouse(self) -> WarehouseResource:
        """The warehouse as the platform's commands see it (STOCK_ASSETS_DB, _DATA, _CATALOG)."""
        from stock_assets.defs.resources import warehouse_resource

        return warehouse_resource(self.config)

    def resources(self, **settings) -> dict:
        return {"fmp": self.fmp(), "warehouse": self.warehouse(), "settings": SyncSettings(**settings)}

    def sql(self, query: str, params=None) -> list[tuple]:
        """A reader's query: the last committed snapshot, whatever runs write meanwhile."""
        return [tuple(row.values()) for row in self.warehouse().query(query, params or [])]

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection as a user's own DuckDB has it: the lake attached read-only."""
        conn = self.warehouse().connect(read_only=True)
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A test's own change to the warehouse, committed in one transaction when the block ends."""
        conn = self.warehouse().connect()
        try:
            conn.execute("BEGIN TRANSACTION")
            yield conn
            conn.execute("COMMIT")
        finally:
            conn.close()


def make_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, symbols: int = SYMBOLS,
                  plan: str = "premium", rate_limit_per_min: int = 60_000, **sim_options) -> Platform:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    if "now" in sim_options:  # the simulator reads the platform's clock: set it there
        set_clock(monkeypatch, sim_options.pop("now"))
    config = SimConfig(seed=11, n_symbols=symbols, plan=plan, api_keys=(TEST_KEY,), now=clock.now,
                       rate_limit_per_min=rate_limit_per_min, bulk_min_interval_s=0.0, faults=Faults(), **sim_options)
    sim = SimulatorServer(config, host="127.0.0.1", port=0)
    sim.start()
    platform = Platform(sim, tmp_path / "data" / "stocks.sqlite", home, tmp_path / "data" / "limit.sqlite", plan)
    # The same configuration a user gives through the environment (worker
    # processes of the headless sync inherit it).
    for name, value in {
        "DAGSTER_HOME": str(home), "STOCK_ASSETS_DB": str(platform.db), "FMP_API_KEY": TEST_KEY,
        "FMP_BASE_URL": sim.base_url, "FMP_PLAN": plan, "FMP_RATE_LIMIT_PER_MIN": str(rate_limit_per_min),
        "FMP_LIMITER_STATE": str(platform.limiter),
        # A trading-day grid of a few months, not the default's two years: every first sync
        # reports the days its history holds, and the suite runs dozens of first syncs.
        "STOCK_ASSETS_START": TEST_TRADING_DAYS_START,
    }.items():
        monkeypatch.setenv(name, value)
    return platform


def pytest_collection_modifyitems(items):
    """The slow tests first (a stable sort, the same on every xdist worker): started last, one of them
    kept a worker busy alone for minutes after the other had finished."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server per test process (a database per test), stopped when the tests end."""
    from stock_assets_tests.servers import postgres_server

    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis():
    """One Redis server per test process (a database number per use), stopped when the tests end."""
    from stock_assets_tests.servers import redis_server

    with redis_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def lake_location(request, tmp_path) -> dict[str, str]:
    """Where a test's lake lives: the embedded default (a SQLite catalog file), or a PostgreSQL
    catalog with its data path: the same tests pass on both."""
    if request.param == "sqlite":
        return {"database": str(tmp_path / "sub" / "wh.sqlite")}
    url = request.getfixturevalue("postgres").create_database(f"lake_{uuid.uuid4().hex[:12]}")
    return {"database": str(tmp_path / "sub" / "unused.sqlite"), "catalog": url, "data_path": str(tmp_path / "files")}


@pytest.fixture()
def platform(tmp_path, monkeypatch):
    platform = make_platform(tmp_path, monkeypatch)
    yield platform
    platform.sim.stop()


# -- syncs on the days a test chooses: the platform's and the simulator's clocks set together ----

def session(back: int) -> dt.date:
    """The session `back` sessions before the last closed one."""
    cal = trading.calendar()
    last = pandas.Timestamp(trading.last_closed_session())
    return cal.sessions_window(last, -(back + 1))[0].date()


def after_close(day: dt.date) -> dt.datetime:
    return trading.session_close(day).astimezone(dt.timezone.utc) + dt.timedelta(hours=2)


def daily_sync(platform, day: dt.date) -> int:
    """The sync's plan for `day`, run as its workers run it (`runner.execute`), in this process so the
    clock can be set; returns the calls it made."""
    instance = platform.instance()
    platform.sim.clear_requests()
    tags = {SYNC_TAG: f"sync-{day}"}
    assert execute(instance, platform.config, PlannedRun(("symbols",)), tags).success
    assert execute(instance, platform.config, PlannedRun(("splits",), day.isoformat()), tags).success
    for planned in plan_after_universe(platform.warehouse(), instance, day, settings_resource(platform.config),
                                       platform.plan):
        outcome = execute(instance, platform.config, planned, tags)
        assert outcome.success, outcome.error
    return len(platform.sim.settled_requests())


def assert_no_key_stored_twice(platform: Platform) -> None:
    """DuckLake has no primary keys: every table's key, stored once (writers at once included)."""
    from stock_assets.warehouse import TABLES

    for table in TABLES.values():
        key = ", ".join(table.key)
        (rows, keys), = platform.sql(f"SELECT count(*), count(DISTINCT ({key})) FROM {table.name}")
        assert rows == keys, f"{table.name}: {rows - keys} keys stored twice"


def assert_warehouse_matches_truth(platform: Platform) -> None:
    """Every symbol of the simulator's universe: its bars, dividends and profile as FMP serves them.

    Read in one query a table (a lake query costs milliseconds of catalog reads: thousands of
    per-symbol queries took minutes), compared symbol by symbol."""
    from stock_assets import trading
    from stock_assets.defs.assets.prices import history_start

    truth = platform.sim.truth
    expected = {r["symbol"] for r in truth.universe() if r["isActivelyTrading"] and not r["isFund"]}
    assert {s for (s,) in platform.sql("SELECT symbol FROM market.symbols")} == expected
    end = trading.last_closed_session()
    start = history_start(SyncSettings(), end)
    bars, divs, names = defaultdict(set), defaultdict(set), defaultdict(list)
    for symbol, d, close, volume in platform.sql("SELECT symbol, date, close, volume FROM market.prices"):
        bars[symbol].add((d.isoformat(), round(close, 6), volume))
    for symbol, d, dividend in platform.sql("SELECT symbol, ex_date, dividend FROM market.dividends"):
        divs[symbol].add((d.isoformat(), dividend))
    for symbol, name in platform.sql("SELECT symbol, company_name FROM market.company_profiles"):
        names[symbol].append(name)
    for symbol in sorted(expected):
        want = {(b["date"], round(b["close"], 6), b["volume"]) for b in truth.eod_bars(symbol, start, end)}
        assert bars[symbol] == want, symbol
        assert divs[symbol] == {(d["date"], d["dividend"]) for d in truth.dividends(symbol)}, symbol
        served = truth.profile(symbol)  # None: FMP answers `profile` with [] for it
        assert names[symbol] == ([served["companyName"]] if served else []), symbol
