"""`stock-assets report`: text, JSON, history and chart, read back from real syncs.

Two syncs run for the module: `run_sync()` in this process, then
`stock-assets sync` as a command (which ends with the same report).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from stock_assets import cli
from stock_assets.runs.sync import run_sync
from stock_assets_tests.conftest import PROJECT, make_platform

# Real syncs on a shared 2-core machine: well past the default 300 s when others run too.
# One worker runs the module (make test: --dist loadgroup): its fixture, a whole sync, then runs once.
pytestmark = [pytest.mark.timeout(1200), pytest.mark.xdist_group("report")]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def report(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["report", *args])
    return code, capsys.readouterr().out


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    platform = make_platform(tmp_path_factory.mktemp("report"), monkeypatch)
    try:
        outcome = run_sync(platform.config, log=lambda line: None)
        assert outcome.success, [r.description for r in outcome.failed]
        requests = platform.sim.settled_requests(quiet_s=0.5)
        yield SimpleNamespace(platform=platform, first=outcome, requests=requests)
    finally:
        platform.sim.stop()
        monkeypatch.undo()


def _section(text: str, title: str) -> list[str]:
    """The table lines under a section title, up to the next blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    body = []
    for line in lines[start + 3:]:  # title, header, rule
        if not line.strip():
            break
        body.append(line)
    return body


def test_report_prints_time_calls_savings_and_phases(synced, capsys):
    p = synced.platform
    code, text = report(capsys)
    assert code == 0, text
    assert f"Sync {synced.first.sync_id}" in text
    (duration,), = p.sql("SELECT duration_s FROM metrics.sync_summary")
    assert f"execution time {duration:.1f}s" in text

    calls = collections.Counter(r["path"] for r in synced.requests)
    rows = {line.split()[0]: line.split() for line in _section(text, "API calls per endpoint")}
    assert set(rows) == set(calls)
    for endpoint, count in calls.items():
        assert rows[endpoint][1] == f"{count:,}", (endpoint, rows[endpoint])
        assert rows[endpoint][2] == "100.0%"
    assert f"API calls {sum(calls.values()):,}" in text
    # The one baseline every saving is measured against: one call per symbol for prices, dividends
    # and profile, for the universe the sync refreshed (counted here from the simulator's screener).
    universe = len([r for r in p.sim.truth.universe() if r["isActivelyTrading"] and not r["isFund"]])
    assert (f"baseline, the naive sync (one call per symbol for prices, dividends and profile): "
            f"3 x {universe:,} symbols = {3 * universe:,} calls") in text
    assert "revisions repaired: " in text

    savings = _section(text, "Savings per optimization")
    expected = p.sql("SELECT name, sum(calls_saved), sum(seconds_saved) FROM metrics.optimizations GROUP BY 1")
    assert len(savings) == len(expected) and len(expected) >= 3
    for name, saved, seconds in expected:
        (line,) = [line for line in savings if line.startswith(name + "  ")]
        assert line.split()[-2:] == [f"{saved:,}", f"{seconds:,.2f}"], line

    phases = {line.split()[0]: line for line in _section(text, "Phases")}
    assert {"plan", "fetch", "write"} <= set(phases)
    (fetch_s,), = p.sql("SELECT sum(duration_s) FROM metrics.phases WHERE phase = 'fetch'")
    assert phases["fetch"].split()[1] == f"{fetch_s:,.2f}"


def test_report_json_equals_the_metrics_tables(synced, capsys):
    p = synced.platform
    code, out = report(capsys, "--json")
    assert code == 0
    document = json.loads(out)
    latest = document["latest"]
    assert document["history"] is None
    assert latest["sync"]["batch_id"] == synced.first.sync_id
    assert latest["sync"]["api_calls"] == len(synced.requests)
    (steps, failed, rows), = p.sql("SELECT count(*), count(*) FILTER (WHERE status = 'failed'), "
                                   "sum(rows_written) FROM metrics.runs")
    assert (latest["sync"]["steps"], latest["sync"]["failed_steps"], latest["sync"]["rows_written"]) == (
        steps, failed, rows)
    endpoints = {e["endpoint"]: (e["calls"], e["succeeded"], e["retries"]) for e in latest["endpoints"]}
    assert endpoints == {e: (c, s, r) for e, c, s, r in p.sql(
        "SELECT endpoint, sum(calls), sum(succeeded), sum(retries) FROM metrics.api_calls GROUP BY 1")}
    assert {e: c for e, (c, _, _) in endpoints.items()} == collections.Counter(
        r["path"] for r in synced.requests)
    optimizations = {o["name"]: (o["calls_saved"], o["items_skipped"], pytest.approx(o["seconds_saved"]))
                     for o in latest["optimizations"]}
    assert optimizations == {n: (c, s, sec) for n, c, s, sec in p.sql(
        "SELECT name, sum(calls_saved), sum(items_skipped), sum(seconds_saved) FROM metrics.optimizations "
        "GROUP BY 1")}
    phases = {ph["phase"]: (ph["items"], pytest.approx(ph["duration_s"])) for ph in latest["phases"]}
    assert phases == {n: (i, d) for n, i, d in p.sql(
        "SELECT phase, sum(items), sum(duration_s) FROM metrics.phases GROUP BY 1")}
    assets = {a["asset"]: (a["partitions"], a["api_calls"], a["rows_written"]) for a in latest["assets"]}
    assert assets == {a: (n, c, r) for a, n, c, r in p.sql(
        "SELECT asset, count(*), sum(api_calls), sum(rows_written) FROM metrics.runs GROUP BY 1")}


def test_second_sync_command_then_history_and_plot(synced, capsys, tmp_path):
    p = synced.platform
    done = subprocess.run([sys.executable, "-m", "stock_assets.cli", "sync"], cwd=PROJECT,
                          env=os.environ.copy(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # `stock-assets sync` ends with the report of the sync it ran.
    (second,), = p.sql("SELECT batch_id FROM metrics.sync_summary WHERE batch_id <> ?", [synced.first.sync_id])
    assert f"Sync {second}" in done.stdout and "API calls per endpoint" in done.stdout

    code, text = report(capsys, "--history", "2")
    assert code == 0
    lines = text.splitlines()
    assert len(lines) == 4  # header, rule, two syncs (oldest first)
    assert lines[2].startswith(synced.first.sync_id) and lines[3].startswith(second)
    calls = dict(p.sql("SELECT batch_id, api_calls FROM metrics.sync_summary"))
    assert calls[synced.first.sync_id] > calls[second] > 0  # the second fetched only what changed
    for line, batch in ((lines[2], synced.first.sync_id), (lines[3], second)):
        assert f"{calls[batch]:,}" in line.split()

    code, out = report(capsys, "--history", "2", "--json")
    history = json.loads(out)["history"]
    assert [h["batch_id"] for h in history] == [synced.first.sync_id, second]
    assert [h["api_calls"] for h in history] == [calls[synced.first.sync_id], calls[second]]

    chart = tmp_path / "history.png"
    code, out = report(capsys, "--history", "2", "--plot", str(chart))
    assert code == 0 and f"written to {chart}" in out
    data = chart.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000


def test_missing_warehouse_is_a_clear_error(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "nowhere" / "stocks.duckdb"
    monkeypatch.setenv("STOCK_ASSETS_DB", str(missing))
    code, out = report(capsys)
    assert code == 1
    assert f"No warehouse at {missing}" in out and "stock-assets sync" in out
    assert not missing.exists()
    done = subprocess.run([sys.executable, "-m", "stock_assets.cli", "report", "--json"], cwd=PROJECT,
                          env=os.environ.copy(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "No warehouse at" in done.stdout
