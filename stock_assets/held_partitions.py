"""Partitions the warehouse already holds, reported to Dagster as materialized without a run.

A first load stores years of bars and dividends through the shard assets
(`price_history`, `dividend_history`), so the trading-day partitions of
`daily_prices` and `dividends` for those days hold their data though no run
of theirs ever made it (and `splits` fills its past in windows); a shard that holds no symbol of the universe has
nothing to hold at all; a holiday has no session. Left "Missing", each would
invite a run that fetches nothing ("Failed and missing" would launch
hundreds). They are reported as runless materializations that say where
their data came from, once, by `stock-assets sync`/`backfill-failed` when
they end and by the `housekeeping` sensor under the daemon.

Only partitions with no status at all are reported: a failed partition keeps
its failure until it is run again.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import dagster as dg

from stock_assets import trading
from stock_assets.defs.assets import SHARD_ASSETS
from stock_assets.defs.partitions import SHARD_KEYS, symbol_shards
from stock_assets.warehouse import WarehouseResource

class DayAsset(NamedTuple):
    """A trading-day asset, the history asset that fills its days (its dataset), the table both write."""

    asset: str
    history: str
    dataset: str
    table: str


DAY_ASSETS = (DayAsset("daily_prices", "price_history", "prices", "market.prices"),
              DayAsset("dividends", "dividend_history", "dividends", "market.dividends"))


def held_partitions(instance: dg.DagsterInstance, warehouse: WarehouseResource,
                    trading_days: dg.TimeWindowPartitionsDefinition) -> list[dg.AssetMaterialization]:
    """Runless materializations for the partitions held but never materialized (none before a universe)."""
    present = warehouse.shards_present()
    if not present:
        return []
    events = []
    for day_asset in DAY_ASSETS:
        events += _days_held(instance, warehouse, trading_days, day_asset)
    events += _splits_days_held(instance, warehouse, trading_days)
    for key in SHARD_ASSETS:
        for shard in _without_status(instance, key, sorted(set(SHARD_KEYS) - present)):
            events.append(dg.AssetMaterialization(
                asset_key=key, partition=shard, description="No symbol of the universe is in this shard.",
                metadata={"symbols": 0, "dagster/row_count": 0, "route": "empty shard"}))
    return events


def report_held_partitions(instance: dg.DagsterInstance, warehouse: WarehouseResource,
                           trading_days: dg.TimeWindowPartitionsDefinition) -> int:
    events = held_partitions(instance, warehouse, trading_days)
    for event in events:
        instance.report_runless_asset_event(event)
    return len(events)


def _days_held(instance: dg.DagsterInstance, warehouse: WarehouseResource,
               trading_days: dg.TimeWindowPartitionsDefinition, held: DayAsset) -> list[dg.AssetMaterialization]:
    key = dg.AssetKey(held.asset)
    days = [dt.date.fromisoformat(k) for k in _without_status(instance, key, trading_days.get_partition_keys(current_time=trading.now_utc()),
                                                               trading_days)]
    if not days:
        return []
    loaded, first, last = warehouse.history_span(held.dataset)
    rows = warehouse.rows_by_day(held.table, days[0], days[-1])
    events = []
    for day in days:
        if not trading.is_session(day):
            events.append(dg.AssetMaterialization(
                asset_key=key, partition=day.isoformat(), description="The market was closed (NYSE holiday).",
                metadata={"market": "closed", "dagster/row_count": 0, "route": "market closed"}))
        elif loaded and (first is None or first <= day) and last is not None and day <= last:
            events.append(dg.AssetMaterialization(
                asset_key=key, partition=day.isoformat(),
                description=f"Stored by {held.history}: every active symbol's history covers this day.",
                metadata={"dagster/row_count": rows.get(day, 0), "route": f"{held.dataset} history"}))
    return events


def _splits_days_held(instance: dg.DagsterInstance, warehouse: WarehouseResource,
                      trading_days: dg.TimeWindowPartitionsDefinition) -> list[dg.AssetMaterialization]:
    """The days the splits calendar's fill (or a gap's) fetched, though no run of their own did."""
    span = warehouse.calendar_span("splits-calendar")
    if span is None:
        return []
    key = dg.AssetKey("splits")
    days = [k for k in _without_status(instance, key, trading_days.get_partition_keys(current_time=trading.now_utc()), trading_days)
            if span[0].isoformat() <= k <= span[1].isoformat()]
    if not days:
        return []
    rows = warehouse.rows_by_day("market.splits", dt.date.fromisoformat(days[0]), dt.date.fromisoformat(days[-1]))
    return [dg.AssetMaterialization(
        asset_key=key, partition=day, description="Stored by the splits calendar, fetched in windows.",
        metadata={"dagster/row_count": rows.get(dt.date.fromisoformat(day), 0), "route": "splits-calendar window"})
        for day in days]


def _without_status(instance: dg.DagsterInstance, key: dg.AssetKey, partitions: list[str],
                    partitions_def: dg.PartitionsDefinition | None = None) -> list[str]:
    """The partitions Dagster knows nothing of: never materialized, failed or in progress."""
    if not partitions:
        return []
    status = instance.get_status_by_partition(key, partitions, partitions_def or symbol_shards) or {}
    return [p for p in partitions if status.get(p) is None]
