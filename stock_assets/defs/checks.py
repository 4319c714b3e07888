"""Asset checks, evaluated by each materialization for what it just wrote.

Each asset declares its checks (`check_specs`) and returns their results with
its MaterializeResult, so the UI shows them per asset and per partition run:
prices sane, no duplicate keys, coverage of the universe, profile freshness,
and the partition's item success rate.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Sequence

import dagster as dg

from stock_assets.profile_refresh import FRESHNESS_SLACK_DAYS
from stock_assets.run_stats import RunStats
from stock_assets.warehouse import WarehouseResource
from stock_assets.warehouse.resource import SPLIT_JUMP_TOLERANCE

MIN_FRESH_SHARE = 0.99

PRICES_SANE = "prices_sane"
NO_DUPLICATES = "no_duplicate_keys"
COVERAGE = "coverage"
PROFILES_FRESH = "profiles_fresh"
ITEM_SUCCESS = "item_success_rate"
SPLITS_RESTATED = "splits_restated"
NO_SPLIT_JUMPS = "no_split_jumps"
# Checks a materialization cannot succeed without: failing one fails the partition.
BLOCKING = {COVERAGE}


def specs(asset: str, partitions: dg.PartitionsDefinition | None, *names: str) -> list[dg.AssetCheckSpec]:
    """The asset's checks, partitioned like it, so each result names its shard or day."""
    descriptions = {
        PRICES_SANE: "Prices positive, low ≤ open, close ≤ high, volume ≥ 0 in what this run covers.",
        NO_DUPLICATES: "No key appears twice in the asset's table.",
        COVERAGE: "Every symbol listed that session has its bar, or FMP itself has none for it (named, with "
                  "FMP's answer). Blocking: a partition that lacks one fails, so every route that mends "
                  "Failed partitions mends it.",
        PROFILES_FRESH: f"At least {MIN_FRESH_SHARE:.0%} of the shard's full profiles are no older than "
                        f"profile_max_age_days + {FRESHNESS_SLACK_DAYS} (the wait for their refresh turn).",
        ITEM_SUCCESS: "The share of the partition's items fetched is within the allowed failure share.",
        SPLITS_RESTATED: "No symbol of the shard holds history in the shares before a split: loaded before "
                         "the split's ex-date, or jumping by its ratio there (the run restates them).",
        NO_SPLIT_JUMPS: "No split day shows a close-to-close move matching the split's ratio (an "
                        "unrestated split in the stored bars).",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # partitioned checks: preview in 1.13
        return [dg.AssetCheckSpec(name, asset=asset, description=descriptions[name], partitions_def=partitions,
                                  blocking=name in BLOCKING)
                for name in names]


def item_success(stats: RunStats, max_failed_share: float) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=ITEM_SUCCESS, passed=stats.success_rate >= 1 - max_failed_share,
        metadata={"success_rate": stats.success_rate, "items_failed": stats.items_failed,
                  "items_attempted": stats.items_succeeded + stats.items_failed})


def prices_sane(warehouse: WarehouseResource, *, day: dt.date | None = None,
                shards: Sequence[str] | None = None) -> dg.AssetCheckResult:
    """Over one day's bars, or the run's shards'."""
    rows, bad, examples = warehouse.price_sanity(day=day, shards=shards)
    return dg.AssetCheckResult(
        check_name=PRICES_SANE, passed=bad == 0,
        metadata={"rows_checked": rows, "insane_rows": bad,
                  "examples": ", ".join(f"{s} {d}" for s, d in examples) or "none"})


def splits_restated(warehouse: WarehouseResource, shards: Sequence[str]) -> dg.AssetCheckResult:
    pending = warehouse.symbols_needing_restatement("prices", sorted(warehouse.universe_symbols(shards)))
    return dg.AssetCheckResult(check_name=SPLITS_RESTATED, passed=not pending,
                               metadata={"pending": len(pending), "symbols": ", ".join(pending[:20]) or "none"})


def no_split_jumps(warehouse: WarehouseResource, shards: Sequence[str]) -> dg.AssetCheckResult:
    """On each split's ex-date, the close before it over the close on it: near 1, not near the ratio."""
    jumps = [(symbol, day, ratio, jump) for symbol, day, ratio, jump in warehouse.split_day_moves(shards)
             if abs(ratio - 1) > 2 * SPLIT_JUMP_TOLERANCE and abs(jump / ratio - 1) < SPLIT_JUMP_TOLERANCE]
    return dg.AssetCheckResult(
        check_name=NO_SPLIT_JUMPS, passed=not jumps,
        metadata={"unrestated": len(jumps),
                  "examples": ", ".join(f"{s} {d} x{j:.2f}" for s, d, _, j in jumps[:5]) or "none"})


def no_duplicates(warehouse: WarehouseResource, table: str, day: dt.date | None = None) -> dg.AssetCheckResult:
    """No key held twice: in `day`'s rows for a trading-day partition, else in the whole table."""
    dupes = warehouse.duplicated_keys(table, day)
    return dg.AssetCheckResult(check_name=NO_DUPLICATES, passed=dupes == 0,
                               metadata={"table": table, "duplicated_keys": dupes,
                                         "rows_of": day.isoformat() if day else "all"})


def coverage(warehouse: WarehouseResource, day: dt.date, session: bool) -> dg.AssetCheckResult:
    """Complete: every symbol listed that session has its bar, or the source said it has none."""
    if not session:
        return dg.AssetCheckResult(check_name=COVERAGE, passed=True, metadata={"market": "closed"})
    day_bars = warehouse.day_coverage(day)
    return dg.AssetCheckResult(
        check_name=COVERAGE, passed=not day_bars.missing,
        description=(f"Missing the bars of {len(day_bars.missing)} listed symbols: "
                     f"{', '.join(day_bars.missing[:20])}" if day_bars.missing else None),
        metadata={"listed_symbols": len(day_bars.listed), "with_bar": len(day_bars.with_bar),
                  "missing": len(day_bars.missing), "missing_symbols": ", ".join(day_bars.missing[:50]) or "none",
                  "no_bar_at_source": len(day_bars.absent),
                  "no_bar_symbols": "; ".join(f"{s}: {why}" for s, why in list(day_bars.absent.items())[:50])
                  or "none"})


def profiles_fresh(warehouse: WarehouseResource, shards: Sequence[str], max_age_days: int) -> dg.AssetCheckResult:
    total, fresh = warehouse.profile_freshness(shards, max_age_days + FRESHNESS_SLACK_DAYS)
    share = fresh / total if total else 1.0
    return dg.AssetCheckResult(check_name=PROFILES_FRESH, passed=share >= MIN_FRESH_SHARE,
                               metadata={"symbols": total, "fresh": fresh, "fresh_share": share})
