"""Configuration: every environment variable the platform reads, read here, each default once.

`Config.from_env()` reads and validates them all at once, so a command can
say what is wrong in one line before it starts any work. Nothing here runs at
import time; the only code that changes the environment is the simulator
switch (`local_api.fmp_environment`), which points the FMP variables at a
local simulator for a command's lifetime.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from stock_assets import clock
from stock_assets.errors import ConfigError
from stock_assets.fmp import DEFAULT_BASE_URL
from stock_assets.fmp.plans import PLANS
from stock_assets.defs.partitions import DEFAULT_TRADING_DAYS_START
from stock_assets.warehouse import DEFAULT_DATABASE

DEFAULT_PLAN = "premium"
DEFAULT_LIMITER_STATE = "data/fmp-rate-limit.sqlite"
DEFAULT_HOME = "dagster_home"
# The built-in simulator: a demo-sized universe and a generous limit, so a first
# sync takes a minute; STOCK_ASSETS_SIM_SYMBOLS=19205 and
# STOCK_ASSETS_SIM_RATE_PER_MIN=750 give the full universe at Premium's pace.
DEFAULT_SIM_SYMBOLS = 600
DEFAULT_SIM_RATE_PER_MIN = 6000
DEFAULT_SIM_LATENCY_S = 0.02
DEFAULT_SIM_SEED = 7
DEFAULT_PROFILE_MAX_AGE_DAYS = 30


@dataclass(frozen=True)
class Config:
    api_key: str | None
    base_url: str
    plan: str
    rate_limit_per_min: int | None
    limiter_state: str
    database: str
    data_path: str | None  # the lake's Parquet files; None: beside the local catalog
    catalog: str | None  # a PostgreSQL catalog (postgresql://...) in place of the local file
    trading_days_start: dt.date
    history_start: dt.date | None
    dagster_home: Path
    sim_symbols: int
    sim_rate_per_min: int
    sim_latency_s: float
    sim_seed: int
    pinned_now: dt.datetime | None  # STOCK_ASSETS_NOW: the clock pinned (clock.now reads it)
    profile_max_age_days: int  # a full profile (and a confirmation of the bars) at least this often

    @property
    def uses_simulator(self) -> bool:
        return self.api_key is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = _Env(os.environ if environ is None else environ)
        return cls(
            api_key=env.text("FMP_API_KEY"),
            base_url=env.url("FMP_BASE_URL", DEFAULT_BASE_URL),
            plan=env.choice("FMP_PLAN", DEFAULT_PLAN, PLANS),
            rate_limit_per_min=env.positive_int("FMP_RATE_LIMIT_PER_MIN", None),
            limiter_state=env.text("FMP_LIMITER_STATE") or DEFAULT_LIMITER_STATE,
            database=env.file_path("STOCK_ASSETS_DB", DEFAULT_DATABASE),
            data_path=env.optional_folder("STOCK_ASSETS_DATA"),
            catalog=env.postgres_url("STOCK_ASSETS_CATALOG"),
            trading_days_start=env.date("STOCK_ASSETS_START", DEFAULT_TRADING_DAYS_START),
            history_start=env.date("STOCK_ASSETS_HISTORY_START", None),
            dagster_home=env.folder("DAGSTER_HOME", DEFAULT_HOME),
            sim_symbols=env.positive_int("STOCK_ASSETS_SIM_SYMBOLS", DEFAULT_SIM_SYMBOLS),
            sim_rate_per_min=env.positive_int("STOCK_ASSETS_SIM_RATE_PER_MIN", DEFAULT_SIM_RATE_PER_MIN),
            sim_latency_s=env.non_negative_float("STOCK_ASSETS_SIM_LATENCY_S", DEFAULT_SIM_LATENCY_S),
            sim_seed=env.positive_int("STOCK_ASSETS_SIM_SEED", DEFAULT_SIM_SEED),
            pinned_now=env.moment(clock.ENV),
            profile_max_age_days=env.positive_int("STOCK_ASSETS_PROFILE_MAX_AGE_DAYS", DEFAULT_PROFILE_MAX_AGE_DAYS),
        )


class _Env:
    """Typed reads of the environment; a bad value is a `ConfigError` naming the variable."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    def text(self, name: str) -> str | None:
        value = self.environ.get(name, "").strip()
        return value or None

    def url(self, name: str, default: str) -> str:
        value = self.text(name) or default
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"{name}={value!r} is not an http(s) URL: set it to the API root, "
                              f"e.g. {default}.")
        return value.rstrip("/")

    def choice(self, name: str, default: str, choices: Mapping[str, object]) -> str:
        value = (self.text(name) or default).lower()
        if value not in choices:
            raise ConfigError(f"{name}={value!r} is not a plan: use one of {', '.join(choices)}.")
        return value

    def positive_int(self, name: str, default: int | None) -> int | None:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number <= 0:
            raise ConfigError(f"{name}={value!r} must be a whole number above 0.")
        return number

    def non_negative_float(self, name: str, default: float) -> float:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if number < 0:
            raise ConfigError(f"{name}={value!r} must be a number of seconds, 0 or more.")
        return number

    def date(self, name: str, default: str | None) -> dt.date | None:
        value = self.text(name) or default
        if value is None:
            return None
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not a date: use YYYY-MM-DD.") from None

    def moment(self, name: str) -> dt.datetime | None:
        value = self.text(name)
        try:
            return clock.parse(value) if value else None
        except clock.ClockError as error:
            raise ConfigError(str(error)) from None

    def file_path(self, name: str, default: str | None) -> str | None:
        value = self.text(name) or default
        if value is None:
            return None
        path = Path(value).expanduser()
        if path.is_dir():
            raise ConfigError(f"{name}={value!r} is a folder: point it at the file to use, "
                              f"e.g. {Path(value) / 'stocks.sqlite'}.")
        _check_creatable(name, value, path.parent)
        return value

    def optional_folder(self, name: str) -> str | None:
        value = self.text(name)
        if value is None:
            return None
        path = Path(value).expanduser()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{name}={value!r} is a file, not a folder: point it at the folder of the "
                              f"lake's Parquet files (it is created if missing).")
        _check_creatable(name, value, path)
        return value

    def postgres_url(self, name: str) -> str | None:
        """A PostgreSQL URL without a password: the URL is resource config, which the Dagster UI shows,
        so the password goes where libpq reads it (PGPASSWORD, ~/.pgpass). Never echoed back."""
        value = self.text(name)
        if value is None:
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("postgresql", "postgres") or not parsed.hostname:
            raise ConfigError(f"{name} is not a PostgreSQL URL: use postgresql://user@host:port/database "
                              f"(unset, the warehouse's catalog is the local file STOCK_ASSETS_DB).")
        if parsed.password is not None or "password=" in parsed.query:
            raise ConfigError(f"{name} holds a password: Dagster would show it with the resource's config. Put "
                              f"it in PGPASSWORD or ~/.pgpass (PostgreSQL's client reads both) and leave it out "
                              f"of the URL: postgresql://user@host:port/database.")
        return value

    def folder(self, name: str, default: str) -> Path:
        value = self.text(name) or default
        path = Path(value).expanduser().resolve()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{name}={value!r} is a file, not a folder: point it at the folder "
                              f"that keeps the Dagster instance (it is created if missing).")
        _check_creatable(name, value, path)
        return path


def _check_creatable(name: str, value: str, folder: Path) -> None:
    """The folder exists and is writable, or can be created where it would go."""
    existing = folder.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{name}={value!r} cannot be used: {existing} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{name}={value!r} cannot be used: {existing} is not writable by this user.")
