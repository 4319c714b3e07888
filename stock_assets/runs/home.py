"""The Dagster instance folder (DAGSTER_HOME): set up once, one command at a time.

Two commands started at once on a fresh folder would both create Dagster's
SQLite storage and race on stamping its schema (`table alembic_version
already exists`), so the first set-up happens under a file lock. And two
syncs (or a sync and a backfill) on one instance would run the same
partitions twice, against one key's limit: the commands that launch runs
hold `command_lock` for their lifetime, and a second one refuses at once,
naming the first. The locks are `fcntl` locks: the kernel drops them when
their process dies, however it dies, so none is ever left behind.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from filelock import FileLock, Timeout

from stock_assets.errors import CommandError

SETUP_LOCK = ".stock-assets-setup.lock"
COMMAND_LOCK = ".stock-assets-command.lock"
COMMAND_INFO = ".stock-assets-command.json"


class InstanceBusy(CommandError):
    """Another command that launches runs is running on this instance."""


def open_instance(home: Path) -> dg.DagsterInstance:
    """The persistent instance at `home` (created if missing), its storage set up by one process."""
    home.mkdir(parents=True, exist_ok=True)
    with FileLock(home / SETUP_LOCK):
        return dg.DagsterInstance.from_config(str(home))


@contextmanager
def command_lock(home: Path, command: str) -> Iterator[None]:
    """Hold the instance for one command; `InstanceBusy` when another holds it."""
    home.mkdir(parents=True, exist_ok=True)
    lock = FileLock(home / COMMAND_LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise InstanceBusy(f"{_holder(home)} is running on this Dagster instance ({home}): wait for it "
                           f"to end, or stop it (Ctrl-C), then run `stock-assets {command}` again.") from None
    try:
        (home / COMMAND_INFO).write_text(json.dumps({
            "command": command, "pid": os.getpid(), "started": dt.datetime.now().isoformat(timespec="seconds")}))
        yield
    finally:
        lock.release()


def _holder(home: Path) -> str:
    try:
        info = json.loads((home / COMMAND_INFO).read_text())
        return f"`stock-assets {info['command']}` (pid {info['pid']}, started {info['started']})"
    except (OSError, ValueError, KeyError):
        return "Another `stock-assets` command"
