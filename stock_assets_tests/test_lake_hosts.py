"""Two hosts and a reader on one lake with a PostgreSQL catalog: the warehouse beyond one machine.

Each "host" is a `stock-assets sync` of its own: its own Dagster instance, working folder and
limiter, sharing only the PostgreSQL catalog (a real server the test starts) and the data path.
Both sync the same session at once, so they write the same keys of the same tables at the same
time; a third process reads throughout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from stock_assets_tests.conftest import (PROJECT, assert_no_key_stored_twice, assert_warehouse_matches_truth,
                                       make_platform)
from stock_assets_tests.readers import LakeReader


@pytest.fixture()
def shared_lake(tmp_path, monkeypatch, postgres):
    (tmp_path / "host-a").mkdir()
    platform = make_platform(tmp_path / "host-a", monkeypatch, symbols=20)
    monkeypatch.setenv("STOCK_ASSETS_CATALOG", postgres.create_database("hosts"))
    monkeypatch.setenv("STOCK_ASSETS_DATA", str(tmp_path / "shared" / "lake"))
    platform.sim.faults.latency_s = 0.03  # so the syncs overlap for a while
    yield platform
    platform.sim.stop()


def _host(tmp_path, name: str) -> dict[str, str]:
    """A host's own instance, working folder, local files and limiter; the lake's env as everyone's."""
    root = tmp_path / name
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return {**os.environ, "DAGSTER_HOME": str(home), "STOCK_ASSETS_DB": str(root / "data" / "unused.sqlite"),
            "FMP_LIMITER_STATE": str(root / "data" / "limit.sqlite")}


@pytest.mark.scenario  # two full syncs and a reader at once: ~4 minutes alone, run by CI after the default run
@pytest.mark.timeout(1200)
def test_two_hosts_sync_at_once_while_a_reader_reads_and_the_lake_ends_true_with_no_key_twice(shared_lake, tmp_path):
    platform = shared_lake
    platform.warehouse().snapshot()  # the lake is made (its catalog's tables, the schema): readers may attach
    reader = LakeReader(platform.warehouse())
    syncs = [subprocess.Popen([sys.executable, "-m", "stock_assets.cli", "sync"], env=_host(tmp_path, name),
                              cwd=tmp_path / name, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name in ("host-a", "host-b")]
    try:
        while any(s.poll() is None for s in syncs):
            reader.ask()
            time.sleep(0.1)
        outputs = [s.stdout.read() for s in syncs]
    finally:
        reader.stop()
        for s in syncs:
            s.kill()
            s.wait()
    for sync, output in zip(syncs, outputs):
        assert sync.returncode == 0, output[-4000:]
        assert "of" in output and "runs succeeded" in output
    assert_warehouse_matches_truth(platform)
    assert_no_key_stored_twice(platform)  # both wrote every key: each is stored once
    batches = platform.sql("SELECT count(DISTINCT batch_id) FROM metrics.runs")
    assert batches == [(2,)]  # each host's sync recorded its figures
    assert len(reader.snapshots_seen()) > 3
    with platform.reader() as conn:
        reader.assert_every_answer_was_a_committed_snapshot(conn)
