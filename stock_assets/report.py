"""`stock-assets report`: the summary of a sync from the metrics tables.

The same figures the old script printed (execution time, calls per endpoint
with success rate, savings per optimization, per-phase throughput), now read
from `metrics.*` in the warehouse, so any past sync can be shown and trended.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from stock_assets.run_stats import RESTATED_AFTER_SPLIT
from stock_assets.warehouse import WarehouseResource

def latest_batch_id(warehouse: WarehouseResource) -> str | None:
    rows = warehouse.query("SELECT batch_id FROM metrics.sync_summary WHERE batch_kind = 'sync' "
                           "ORDER BY started_at DESC LIMIT 1")
    return rows[0]["batch_id"] if rows else None


def load_summary(warehouse: WarehouseResource, batch_id: str) -> dict[str, Any]:
    """Every figure of one sync (or backfill), as plain data."""
    where = "r.batch_id = ?"
    summary = warehouse.query("SELECT * FROM metrics.sync_summary WHERE batch_id = ?", [batch_id])
    endpoints = warehouse.query(f"""
        SELECT a.endpoint, sum(a.calls) AS calls, sum(a.succeeded) AS succeeded, sum(a.failed) AS failed,
               sum(a.retries) AS retries, sum(a.rate_limited) AS rate_limited, sum(a.bytes) AS bytes,
               sum(a.latency_mean_s * a.calls) / nullif(sum(a.calls), 0) AS latency_mean_s,
               max(a.latency_p95_s) AS latency_p95_max_s, sum(a.limiter_wait_s) AS limiter_wait_s
        FROM metrics.api_calls a JOIN metrics.runs r USING (run_id, asset, partition)
        WHERE {where} GROUP BY a.endpoint ORDER BY calls DESC""", [batch_id])
    optimizations = warehouse.query(f"""
        SELECT o.name, sum(o.items_considered) AS items_considered, sum(o.items_skipped) AS items_skipped,
               sum(o.calls_saved) AS calls_saved, sum(o.seconds_saved) AS seconds_saved
        FROM metrics.optimizations o JOIN metrics.runs r USING (run_id, asset, partition)
        WHERE {where} GROUP BY o.name ORDER BY calls_saved DESC""", [batch_id])
    phases = warehouse.query(f"""
        SELECT p.phase, sum(p.duration_s) AS duration_s, sum(p.items) AS items,
               sum(p.items_succeeded) AS items_succeeded, sum(p.items_failed) AS items_failed,
               sum(p.items) / nullif(sum(p.duration_s), 0) AS items_per_s
        FROM metrics.phases p JOIN metrics.runs r USING (run_id, asset, partition)
        WHERE {where} GROUP BY p.phase ORDER BY duration_s DESC""", [batch_id])
    assets = warehouse.query(f"""
        SELECT r.asset, count(*) AS partitions, count(*) FILTER (WHERE r.status = 'failed') AS failed,
               sum(r.duration_s) AS duration_s, sum(r.items_total) AS items, sum(r.items_failed) AS items_failed,
               sum(r.items_skipped) AS items_skipped, sum(r.rows_written) AS rows_written,
               sum(r.api_calls) AS api_calls, string_agg(DISTINCT r.route, ', ') AS routes
        FROM metrics.runs r WHERE {where} GROUP BY r.asset ORDER BY duration_s DESC""", [batch_id])
    universe = sum(a["items"] or 0 for a in assets if a["asset"] == "symbols")
    return {"sync": summary[0] if summary else None, "endpoints": endpoints,
            "optimizations": optimizations, "phases": phases, "assets": assets,
            "baseline_calls": NAIVE_CALLS_PER_SYMBOL * universe, "universe": universe}


# The baseline every saving is measured against: the naive sync, one call per symbol for its
# prices, its dividends and its profile.
NAIVE_CALLS_PER_SYMBOL = 3


def load_history(warehouse: WarehouseResource, count: int) -> list[dict[str, Any]]:
    rows = warehouse.query("SELECT * FROM metrics.sync_summary WHERE batch_kind = 'sync' "
                           "ORDER BY started_at DESC LIMIT ?", [count])
    return list(reversed(rows))


# ---- text ------------------------------------------------------------------
def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda values: "  ".join(  # noqa: E731 - a one-line formatter
        v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _rate(ok: float | None, total: float | None) -> str:
    return f"{100 * (ok or 0) / total:.1f}%" if total else "-"


def render_summary(data: dict[str, Any]) -> str:
    sync = data["sync"]
    if sync is None:
        return "No figures were recorded for this sync: it ended before any materialization ran."
    out = [f"Sync {sync['batch_id']}  ({sync['batch_kind']})",
           f"  started {sync['started_at']:%Y-%m-%d %H:%M:%S} UTC, execution time {sync['duration_s']:.1f}s",
           f"  {sync['runs']} runs, {sync['steps']} materializations, {sync['failed_steps']} failed; "
           f"items {sync['items_succeeded']:,}/{sync['items']:,} ok ({100 * sync['item_success_rate']:.2f}%), "
           f"{sync['rows_written']:,} rows written",
           f"  API calls {sync['api_calls']:,} ({sync['retries']:,} retries, {sync['rate_limited']:,} rate-limited); "
           f"saved {sync['calls_saved']:,} calls and {sync['seconds_saved']:.1f}s (by work that succeeded)",
           f"  revisions repaired: {sync['revisions_repaired']:,} stored bars corrected by FMP's official "
           f"end-of-day data"]
    if data["baseline_calls"]:
        out += [f"  baseline, the naive sync (one call per symbol for prices, dividends and profile): "
                f"{NAIVE_CALLS_PER_SYMBOL} x {data['universe']:,} symbols = {data['baseline_calls']:,} calls; "
                f"this sync made {sync['api_calls'] / data['baseline_calls']:.1%} of it"]
    out += [""]
    out += ["API calls per endpoint", _table(
        ["endpoint", "calls", "success", "retries", "429s", "MB", "mean s", "p95 s", "limiter wait s"],
        [[e["endpoint"], e["calls"], _rate(e["succeeded"], e["calls"]), e["retries"], e["rate_limited"],
          (e["bytes"] or 0) / 1e6, e["latency_mean_s"], e["latency_p95_max_s"], e["limiter_wait_s"]]
         for e in data["endpoints"]]), ""]
    savings = [o for o in data["optimizations"] if o["name"] != RESTATED_AFTER_SPLIT]
    out += ["Savings per optimization (time saved = calls saved / the key's paced rate)", _table(
        ["optimization", "considered", "skipped", "calls saved", "time saved s"],
        [[o["name"], o["items_considered"], o["items_skipped"], o["calls_saved"], o["seconds_saved"]]
         for o in savings]), ""]
    restated = sum(o["items_considered"] for o in data["optimizations"] if o["name"] == RESTATED_AFTER_SPLIT)
    if restated:
        out += [f"Restated after a split: {restated} histories fetched again in full (a price history, and "
                f"the dividends of a payer: at most 2 calls per split symbol).", ""]
    out += ["Phases (summed over materializations)", _table(
        ["phase", "duration s", "items", "success", "items/s"],
        [[p["phase"], p["duration_s"], p["items"], _rate(p["items_succeeded"], p["items"]), p["items_per_s"]]
         for p in data["phases"]]), ""]
    out += ["Assets", _table(
        ["asset", "partitions", "failed", "duration s", "items", "failed items", "skipped", "rows", "calls", "routes"],
        [[a["asset"], a["partitions"], a["failed"], a["duration_s"], a["items"], a["items_failed"],
          a["items_skipped"], a["rows_written"], a["api_calls"], a["routes"]] for a in data["assets"]])]
    return "\n".join(out)


def render_history(rows: list[dict[str, Any]]) -> str:
    return _table(
        ["sync", "started (UTC)", "duration s", "calls", "calls saved", "time saved s", "item success", "failed"],
        [[r["batch_id"], f"{r['started_at']:%Y-%m-%d %H:%M}", r["duration_s"], r["api_calls"], r["calls_saved"],
          r["seconds_saved"], f"{100 * r['item_success_rate']:.2f}%", r["failed_steps"]] for r in rows])


def plot_history(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here
    import matplotlib.pyplot as plt

    when = [r["started_at"] for r in rows]
    fig, calls_axis = plt.subplots(figsize=(9, 4.5))
    # Bars as wide as 80% of the closest two syncs (a day when there is one), so they never overlap.
    gaps = [(b - a).total_seconds() / 86400 for a, b in zip(when, when[1:]) if b > a]
    calls_axis.bar(when, [r["api_calls"] for r in rows], width=0.8 * min(gaps, default=1.0),
                   color="tab:orange", alpha=0.35, label="API calls")
    calls_axis.set_ylabel("API calls", color="tab:orange")
    duration_axis = calls_axis.twinx()  # drawn after the bars, so the line stays on top
    duration_axis.plot(when, [r["duration_s"] for r in rows], marker="o", color="tab:blue",
                       label="duration (s)")
    duration_axis.set_ylabel("duration (s)", color="tab:blue")
    duration_axis.set_ylim(bottom=0)
    duration_axis.set_title("stock-assets: duration and API calls per sync")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


# ---- entry points ------------------------------------------------------------
def print_report(warehouse: WarehouseResource, sync_id: str | None = None) -> int:
    batch_id = sync_id or latest_batch_id(warehouse)
    if batch_id is None:
        print(f"No sync is recorded in the warehouse ({warehouse.describe()}) yet: run `stock-assets sync` first.")
        return 1
    print(render_summary(load_summary(warehouse, batch_id)))
    return 0


def main(args: argparse.Namespace, warehouse: WarehouseResource) -> int:
    if not warehouse.exists():
        print(f"No warehouse at {warehouse.path}: run `stock-assets sync` first (or set STOCK_ASSETS_DB).")
        return 1
    history = load_history(warehouse, args.history or 30) if (args.history or args.plot) else []
    if args.plot:
        plot_history(history, args.plot)
    if args.json:
        batch_id = latest_batch_id(warehouse)
        document = {"latest": load_summary(warehouse, batch_id) if batch_id else None,
                    "history": history if args.history else None}
        print(json.dumps(document, default=_jsonable, indent=2))
        return 0
    if args.history:
        print(render_history(history))
    elif not args.plot:
        return print_report(warehouse)
    if args.plot:
        print(f"Chart of {len(history)} syncs written to {args.plot}")
    return 0
