"""`company_profiles`: full profiles of the shard's symbols that are due.

The screener layer of every profile is written daily by the universe refresh;
this asset fetches the full profiles `profile_refresh.due_profiles` names: new
symbols, those whose name, sector, industry or exchange changed on the
screener, and the slice of the universe whose refresh turn is today.

On Ultimate, the universe refresh writes every listed symbol's full profile from
the day's `profile-bulk` download (`profile_bulk`), so none is due here but a
symbol the download lacks (the universe came from the screener after a 402, or a
forced refresh); the due ones are read from the cached download first.
"""


import datetime as dt
from collections import Counter

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from stock_assets.defs import checks as checks_mod
from stock_assets import trading
from stock_assets.defs.assets import profile_bulk
from stock_assets.defs.assets.common import FMP_POOL
from stock_assets.defs.assets.materialization import Fetched, Materialization
from stock_assets.defs.assets.universe import symbols
from stock_assets.fmp import FMPPlanError, FMPResource, get_plan
from stock_assets.defs.partitions import symbol_shards
from stock_assets.profile_refresh import due_now
from stock_assets.defs.resources import SyncSettings
from stock_assets.warehouse import WarehouseResource, column_schema


@dg.asset(group_name="profiles", partitions_def=symbol_shards, deps=[symbols], pool=FMP_POOL,
          kinds={"duckdb"}, metadata={"dagster/column_schema": column_schema("company_profiles")},
          check_specs=checks_mod.specs("company_profiles", symbol_shards, checks_mod.PROFILES_FRESH,
                                       checks_mod.ITEM_SUCCESS),
          description="Full company profiles of the shard's symbols that are new, changed on the "
                      "screener, or on today's refresh turn: market.company_profiles (whose screener "
                      "columns the universe refresh rewrites daily).")
def company_profiles(context: dg.AssetExecutionContext, fmp: FMPResource, warehouse: WarehouseResource,
                     settings: SyncSettings) -> dg.MaterializeResult:
    with Materialization(context, fmp, warehouse, settings) as m:
        with m.stats.phase("plan"):
            states = warehouse.profile_states()
            reasons = due_now(states, settings.profile_max_age_days, warehouse.resting_after_empty("profile"))
            shard_symbols = sorted(s.symbol for s in states if s.shard in m.shards)
            due = shard_symbols if settings.refresh else [s for s in shard_symbols if s in reasons]
        fresh = len(shard_symbols) - len(due)
        m.stats.items_skipped = fresh
        if fresh:
            m.stats.optimized("profile cycle", len(shard_symbols), fresh, fresh)
        if due and not settings.refresh:
            why = Counter(reasons[s].split(":")[0] for s in due)
            m.log(f"{len(due)} full profiles due: " + ", ".join(f"{n} {r}" for r, n in why.most_common()))
        rest = due
        if due and get_plan(fmp.plan).serves("profile-bulk"):
            rest = from_bulk(m, due, trading.last_closed_session())
        if rest:
            m.stats.route = "profile" if len(rest) == len(due) else "profile-bulk, then profile"
            summary = m.fetch_and_write(rest, fmp.profile, lambda got: write_profiles(m, got))
            m.count_items(summary.total, [f.item for f in summary.failures])
        return m.result([checks_mod.profiles_fresh(warehouse, m.shards, settings.profile_max_age_days)])


def write_profiles(m: Materialization, got: Fetched) -> int:
    """A chunk's profiles; a symbol FMP answered with `[]` rests and is asked again after a backoff."""
    answered = {p.symbol for p in got.records} | {r.key for r in got.rejects}
    m.warehouse.record_empty_answers("profile", [s for s in got.items if s not in answered], answered)
    return m.warehouse.write_profiles(got.records, fetched_at=trading.now_utc(), rejects=got.rejects,
                                      run_id=m.run_id)


def from_bulk(m: Materialization, due: list[str], session: dt.date) -> list[str]:
    """The due profiles from the session's cached `profile-bulk`; returns the due symbols it lacks, for
    per-symbol calls (all of them when the plan refuses it, 402; those listed after the day's
    download, or that FMP's bulk file leaves out)."""
    try:
        with m.stats.phase("fetch") as phase:
            table = profile_bulk.download(m.fmp, m.warehouse, session, m.log)
            table = table.filter(pc.is_in(table["symbol"], value_set=pa.array(due)))
            phase.items = phase.succeeded = table.num_rows
    except FMPPlanError as error:
        note = "profile-bulk is not in the plan (402); falling back to per-symbol profile calls"
        m.stats.notes.append(note)
        m.warn(f"{note}: {error}")
        return due
    found = set(table["symbol"].to_pylist())
    m.stats.route = "profile-bulk"
    m.write(lambda: m.warehouse.write_profiles(table), table.num_rows)
    m.count_items(len(found))
    m.stats.optimized("bulk profiles", len(due), len(found), max(0, len(found) - m.stats.api_calls))
    lacking = [s for s in due if s not in found]
    if lacking:
        m.stats.notes.append(f"{len(lacking)} due profiles not in today's bulk file: fetched one by one")
    return lacking
