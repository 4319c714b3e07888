"""Asset checks, evaluated by each materialization for what it just wrote.

Each asset declares its checks (`check_specs`) and returns their results with
its MaterializeResult, so the UI shows them per asset and per partition run:
prices sane, no duplicate keys, coverage of the universe, profile freshness,
and the partition's item success rate.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from stock_assets.run_stats import RunStats
from stock_assets.warehouse import TABLES, WarehouseResource

MIN_COVERAGE = 0.98
MIN_FRESH_SHARE = 0.99

PRICES_SANE = "prices_sane"
NO_DUPLICATES = "no_duplicate_keys"
COVERAGE = "coverage"
PROFILES_FRESH = "profiles_fresh"
ITEM_SUCCESS = "item_success_rate"

_INSANE_PRICE = """(close <= 0 OR open <= 0 OR high <= 0 OR low <= 0 OR volume < 0
    OR low > least(open, close) OR high < greatest(open, close))"""


def specs(asset: str, *names: str) -> list[dg.AssetCheckSpec]:
    descriptions = {
        PRICES_SANE: "Prices positive, low ≤ open, close ≤ high, volume ≥ 0 in what this run covers.",
        NO_DUPLICATES: "No key appears twice in the asset's table.",
        COVERAGE: f"A session's bars cover at least {MIN_COVERAGE:.0%} of the active universe.",
        PROFILES_FRESH: f"At least {MIN_FRESH_SHARE:.0%} of the shard's profiles are within the cache age.",
        ITEM_SUCCESS: "The share of the partition's items fetched is within the allowed failure share.",
    }
    return [dg.AssetCheckSpec(name, asset=asset, description=descriptions[name]) for name in names]


def item_success(stats: RunStats, max_failed_share: float) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=ITEM_SUCCESS, passed=stats.success_rate >= 1 - max_failed_share,
        metadata={"success_rate": stats.success_rate, "items_failed": stats.items_failed,
                  "items_attempted": stats.items_succeeded + stats.items_failed})


def prices_sane(warehouse: WarehouseResource, where: str, params: list) -> dg.AssetCheckResult:
    (rows, bad), = _rows(warehouse, f"SELECT count(*), count(*) FILTER (WHERE {_INSANE_PRICE}) "
                                    f"FROM market.prices WHERE {where}", params)
    examples = _rows(warehouse, f"SELECT symbol, date FROM market.prices WHERE {where} AND {_INSANE_PRICE} "
                                f"LIMIT 5", params) if bad else []
    return dg.AssetCheckResult(
        check_name=PRICES_SANE, passed=bad == 0,
        metadata={"rows_checked": rows, "insane_rows": bad,
                  "examples": ", ".join(f"{s} {d}" for s, d in examples) or "none"})


def no_duplicates(warehouse: WarehouseResource, table: str) -> dg.AssetCheckResult:
    key = ", ".join(TABLES[table].key)
    (dupes,), = _rows(warehouse, f"SELECT count(*) FROM (SELECT {key} FROM {table} "
                                 f"GROUP BY ALL HAVING count(*) > 1)", [])
    return dg.AssetCheckResult(check_name=NO_DUPLICATES, passed=dupes == 0,
                               metadata={"table": table, "duplicated_keys": dupes})


def coverage(warehouse: WarehouseResource, day: dt.date, session: bool) -> dg.AssetCheckResult:
    if not session:
        return dg.AssetCheckResult(check_name=COVERAGE, passed=True, metadata={"market": "closed"})
    (active, covered), = _rows(warehouse, """
        SELECT count(*), count(p.symbol) FROM market.symbols s
        LEFT JOIN market.prices p ON p.symbol = s.symbol AND p.date = ?
        WHERE coalesce(s.is_actively_trading, TRUE)""", [day])
    share = covered / active if active else 1.0
    return dg.AssetCheckResult(check_name=COVERAGE, passed=share >= MIN_COVERAGE,
                               metadata={"active_symbols": active, "with_bar": covered, "coverage": share})


def profiles_fresh(warehouse: WarehouseResource, shard: str, max_age_days: int) -> dg.AssetCheckResult:
    (total, fresh), = _rows(warehouse, """
        SELECT count(*), count(*) FILTER (WHERE p.fetched_at >= (now() AT TIME ZONE 'UTC') - to_days(CAST(? AS INTEGER)))
        FROM market.symbols s LEFT JOIN market.company_profiles p USING (symbol)
        WHERE s.shard = ?""", [max_age_days, shard])
    share = fresh / total if total else 1.0
    return dg.AssetCheckResult(check_name=PROFILES_FRESH, passed=share >= MIN_FRESH_SHARE,
                               metadata={"symbols": total, "fresh": fresh, "fresh_share": share})


def _rows(warehouse: WarehouseResource, sql: str, params: list) -> list[tuple]:
    return [tuple(row.values()) for row in warehouse.query(sql, params)]
