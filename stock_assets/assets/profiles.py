"""`company_profiles`: profiles of the shard's symbols that are missing or due.

A profile is due when it is missing, older than `profile_max_age_days`, or its
refresh slot comes round: each symbol's slot is a hash of the symbol modulo
the max age, so the daily load is an even 1/7th of the universe rather than a
herd every seventh day.

On Ultimate, `profile-bulk` parts are downloaded once a day into a local cache
(Parquet, guarded by a file lock so that parallel shard runs download once)
and every shard reads its rows from there.
"""


import datetime as dt
import zlib
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from filelock import FileLock

from stock_assets import checks as checks_mod
from stock_assets.assets.common import FMP_POOL
from stock_assets.assets.materialization import Materialization
from stock_assets.assets.universe import symbols
from stock_assets.fmp import FMPPlanError, FMPResource, get_plan
from stock_assets.partitions import symbol_shards
from stock_assets.resources import SyncSettings
from stock_assets.warehouse import WarehouseResource, column_schema, profiles_table

MAX_BULK_PARTS = 50  # FMP gives no part count; stop well past any real one


def refresh_slot(symbol: str, max_age_days: int) -> int:
    return zlib.crc32(symbol.encode()) % max_age_days


def is_due(symbol: str, fetched_at: dt.datetime | None, today: dt.date, max_age_days: int) -> bool:
    if fetched_at is None:
        return True
    age = (today - fetched_at.date()).days
    if age >= max_age_days:
        return True
    return age >= 1 and today.toordinal() % max_age_days == refresh_slot(symbol, max_age_days)


@dg.asset(group_name="profiles", partitions_def=symbol_shards, deps=[symbols], pool=FMP_POOL,
          kinds={"duckdb"}, metadata={"dagster/column_schema": column_schema("company_profiles")},
          check_specs=checks_mod.specs("company_profiles", symbol_shards, checks_mod.PROFILES_FRESH,
                                       checks_mod.ITEM_SUCCESS),
          description="Company profiles of the shard's symbols that are missing or due for "
                      "refresh (each on its own day of the cache age): market.company_profiles.")
def company_profiles(context: dg.AssetExecutionContext, fmp: FMPResource, warehouse: WarehouseResource,
                     settings: SyncSettings) -> dg.MaterializeResult:
    with Materialization(context, fmp, warehouse, settings) as m:
        today = dt.datetime.now(dt.timezone.utc).date()
        with m.stats.phase("plan"):
            shard_symbols = sorted(warehouse.universe_symbols(shard=m.partition_key))
            fetched = warehouse.profiles_fetched_at(shard_symbols)
            due = shard_symbols if settings.refresh else [
                s for s in shard_symbols if is_due(s, fetched.get(s), today, settings.profile_max_age_days)]
        fresh = len(shard_symbols) - len(due)
        m.stats.items_skipped = fresh
        if fresh:
            m.stats.optimized("company cache", len(shard_symbols), fresh, fresh)
        if not (due and get_plan(fmp.plan).serves("profile-bulk") and from_bulk(m, due, today)):
            m.stats.route = "profile"
            summary = m.fetch_and_write(due, fmp.profile, lambda got: warehouse.write_profiles(
                got.records, rejects=got.rejects, run_id=m.run_id))
            m.count_items(summary.total, [f.item for f in summary.failures])
        return m.result([checks_mod.profiles_fresh(warehouse, m.partition_key, settings.profile_max_age_days)])


def from_bulk(m: Materialization, due: list[str], today: dt.date) -> bool:
    """The due profiles from today's cached `profile-bulk`; False when the plan refuses it (402)."""
    try:
        with m.stats.phase("fetch") as phase:
            table = bulk_profiles(m.fmp, Path(m.warehouse.database).parent / "cache" / "profile-bulk", today,
                                  m.log)
            table = table.filter(pc.is_in(table["symbol"], value_set=pa.array(due)))
            phase.items = phase.succeeded = table.num_rows
    except FMPPlanError as error:
        note = "profile-bulk is not in the plan (402); falling back to per-symbol profile calls"
        m.stats.notes.append(note)
        m.warn(f"{note}: {error}")
        return False
    m.stats.route = "profile-bulk"
    m.write(lambda: m.warehouse.write_profiles(table), table.num_rows)
    m.count_items(len(due))
    m.stats.optimized("bulk profiles", len(due), len(due), max(0, len(due) - m.stats.api_calls))
    return True


def bulk_profiles(fmp: FMPResource, cache_dir: Path, today: dt.date, log) -> pa.Table:
    """Today's bulk profiles, downloaded by the first shard that asks and reused by the rest."""
    day_dir = cache_dir / today.isoformat()
    day_dir.mkdir(parents=True, exist_ok=True)
    done = day_dir / "complete"
    with FileLock(str(day_dir / ".lock")):
        if not done.exists():
            fetched_at = dt.datetime.now(dt.timezone.utc)
            for part in range(MAX_BULK_PARTS):
                target = day_dir / f"part-{part}.parquet"
                if target.exists():
                    continue  # a killed download resumes at the next missing part
                parsed = fmp.profile_bulk(part)
                if parsed is None:
                    break
                pq.write_table(profiles_table(parsed.records, fetched_at), target)
                log(f"profile-bulk part {part}: {len(parsed.records)} profiles cached")
            done.touch()
    return pa.concat_tables([pq.read_table(p) for p in sorted(day_dir.glob("part-*.parquet"))])
