"""The API key is a secret: after a sync, a failed run and a rejected key (401),
its bytes are nowhere in the Dagster instance, the warehouse, materialization
metadata, failure messages, or what `stock-assets sync` printed."""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from stock_assets.defs.partitions import SHARD_KEYS, shard_of
from stock_assets_tests.conftest import PROJECT, make_platform

# Real syncs on a shared 2-core machine: well past the default 300 s when others run too.
pytestmark = pytest.mark.timeout(1200)
KEY = "sk-live-7Q9XW2P4ZKVB3M8N-secret"
WRONG_KEY = "sk-live-R5T1YH6JD0LC4E2U-wrong"
# Distinctive pieces too, so a truncated or partly masked key is caught.
NEEDLES = [KEY, WRONG_KEY, "7Q9XW2P4ZKVB3M8N", "R5T1YH6JD0LC4E2U"]


def sync_command() -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stock_assets.cli", "sync"], cwd=PROJECT, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=900)


def leaks(blob: bytes | str) -> list[str]:
    text = blob.decode("latin-1") if isinstance(blob, bytes) else blob
    return [n for n in NEEDLES if n in text]


def test_the_key_never_lands_anywhere(tmp_path, monkeypatch):
    platform = make_platform(tmp_path, monkeypatch)
    try:
        _run_and_scan(platform, tmp_path, monkeypatch)
    finally:
        platform.sim.stop()


def _run_and_scan(platform, tmp_path: Path, monkeypatch) -> None:
    platform.sim.state.config.api_keys = (KEY,)
    monkeypatch.setenv("FMP_API_KEY", KEY)
    members = collections.defaultdict(list)
    for row in platform.sim.truth.universe():
        if row["isActivelyTrading"] and not row["isFund"]:
            members[shard_of(row["symbol"])].append(row["symbol"])
    shard, symbols = max(members.items(), key=lambda item: len(item[1]))
    other = next(s for k, ms in sorted(members.items()) if k != shard for s in ms)
    # A failing symbol fails its shard (a failed run); an invalid row lands in market.rejected_rows.
    platform.sim.faults.failing_symbols = frozenset({symbols[0]})
    platform.sim.faults.invalid_row_symbols = frozenset({other})

    synced = sync_command()
    assert synced.returncode == 1, synced.stdout[-3000:] + synced.stderr[-3000:]
    failed = re.search(r"\[(\S+)\]", synced.stdout.split("Failed:")[-1]).group(1)  # its shard, or a range of them
    first, _, last = failed.partition("...")
    assert shard in SHARD_KEYS[SHARD_KEYS.index(first):SHARD_KEYS.index(last or first) + 1], failed

    # A key FMP rejects: the first run (the universe) fails with a 401.
    monkeypatch.setenv("FMP_API_KEY", WRONG_KEY)
    rejected = sync_command()
    assert rejected.returncode == 1
    assert "could not be refreshed" in rejected.stdout

    instance = platform.instance()
    runs = instance.get_runs()
    failed = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
    assert len(runs) >= 3 and len(failed) == 2, [(r.run_id, r.status) for r in runs]

    # -- what the command printed
    for out in (synced.stdout, synced.stderr, rejected.stdout, rejected.stderr):
        assert not leaks(out)

    # -- the event log: every event of every run, failure messages and metadata included
    failures, metadata_seen = [], 0
    for run in runs:
        assert not leaks(dg.serialize_value(run)), run.run_id
        for entry in instance.all_logs(run.run_id):
            assert not leaks(dg.serialize_value(entry)), (run.run_id, entry.dagster_event_type)
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                metadata = event.event_specific_data.materialization.metadata
                assert not leaks(repr(metadata))
                metadata_seen += 1
            if event.event_type == dg.DagsterEventType.STEP_FAILURE:
                failures.append(event.event_specific_data.error.to_string())
    assert metadata_seen > 10
    auth = [f for f in failures if "401" in f]
    assert auth and all("check FMP_API_KEY" in f for f in auth), failures
    assert any("items failed" in f for f in failures), failures
    assert not any(leaks(f) for f in failures)

    # -- every file of the instance: run storage, event logs, compute logs
    home_files = [p for p in platform.home.rglob("*") if p.is_file()]
    scanned = b"".join(p.read_bytes() for p in home_files)
    assert len(home_files) >= 3 and len(scanned) > 100_000
    assert runs[0].run_id.encode() in scanned  # the scan does see what storage holds
    for path in home_files:
        assert not leaks(path.read_bytes()), path

    # -- the warehouse: raw bytes (and the rest of the data folder: limiter state, caches)
    data_files = [p for p in platform.db.parent.rglob("*") if p.is_file()]
    assert platform.db in data_files
    for path in data_files:
        assert not leaks(path.read_bytes()), path

    # -- the warehouse: every text column of every table
    with platform.reader() as conn:
        columns = conn.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE data_type = 'VARCHAR' AND table_schema IN ('market', 'metrics') "
            "AND table_name IN (SELECT table_name FROM duckdb_tables())").fetchall()
        tables = {(s, t) for s, t, _ in columns}
        assert {("metrics", "runs"), ("market", "rejected_rows"), ("market", "company_profiles")} <= tables
        for schema, table, column in columns:
            for needle in NEEDLES:
                (hits,), = conn.execute(
                    f'SELECT count(*) FROM {schema}.{table} WHERE position(? IN "{column}") > 0',
                    [needle]).fetchall()
                assert hits == 0, (schema, table, column, needle)
        errors = conn.execute("SELECT asset, error FROM metrics.runs WHERE status = 'failed'").fetchall()
        (rejects,), = conn.execute("SELECT count(*) FROM market.rejected_rows").fetchall()
    # The scan covered real failure texts and rejected rows.
    assert {asset for asset, _ in errors} >= {"symbols", "company_profiles"}, errors
    assert any("check FMP_API_KEY" in (error or "") for asset, error in errors if asset == "symbols"), errors
    assert rejects > 0
