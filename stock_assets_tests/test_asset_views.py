"""What the Dagster UI reads about an asset: row counts, checks, failure reasons, columns, figures.

Each test materializes real assets against the simulator on a persistent
instance and reads back what the UI would show: the materialization's
metadata, the check evaluations, the observations of a partition.
"""

from __future__ import annotations

import collections
import os
import signal

import dagster as dg
import pytest

from stock_assets import metrics
from stock_assets.defs.assets import assets_for
from stock_assets.config import Config
from stock_assets.defs.definitions import defs
from stock_assets.warehouse import TABLES

pytestmark = pytest.mark.timeout(600)


def materialize(platform, asset: str, partition: str | None = None, **settings):
    return dg.materialize(assets_for(Config.from_env()), selection=[asset], partition_key=partition,
                          instance=platform.instance(), resources=platform.resources(**settings),
                          raise_on_error=False)


def largest_shard(platform) -> tuple[str, list[str]]:
    members = collections.defaultdict(list)
    for symbol, shard in platform.sql("SELECT symbol, shard FROM market.symbols ORDER BY symbol"):
        members[shard].append(symbol)
    return max(members.items(), key=lambda item: len(item[1]))


def latest_metadata(platform, asset: str, partition: str | None = None) -> dict:
    records = platform.instance().fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=1).records
    return records[0].asset_materialization.metadata


def test_row_count_is_what_the_partition_holds_not_what_the_run_wrote(platform):
    assert materialize(platform, "symbols").success
    shard, members = largest_shard(platform)
    assert materialize(platform, "price_history", shard).success
    (held,), = platform.sql("SELECT count(*) FROM market.prices WHERE symbol IN "
                            "(SELECT symbol FROM market.symbols WHERE shard = ?)", [shard])
    first = latest_metadata(platform, "price_history", shard)
    assert first["dagster/row_count"].value == first["rows_written"].value == held > len(members)

    # Run again: it writes nothing (histories are loaded), and the shard still holds every bar.
    assert materialize(platform, "price_history", shard).success
    again = latest_metadata(platform, "price_history", shard)
    assert again["rows_written"].value == 0
    assert again["dagster/row_count"].value == held

    assert materialize(platform, "company_profiles", shard).success
    assert latest_metadata(platform, "company_profiles", shard)["dagster/row_count"].value == len(members)
    assert materialize(platform, "symbols").success
    (universe,), = platform.sql("SELECT count(*) FROM market.symbols")
    assert latest_metadata(platform, "symbols")["dagster/row_count"].value == universe


def test_a_failed_partition_says_why_and_its_check_fails_with_figures(platform):
    assert materialize(platform, "symbols").success
    shard, members = largest_shard(platform)
    broken = members[:2]
    platform.sim.faults.failing_symbols = frozenset(broken)
    try:
        result = materialize(platform, "company_profiles", shard, max_failed_share=0.01)
    finally:
        platform.sim.faults.failing_symbols = frozenset()
    assert not result.success
    instance = platform.instance()

    # The check failed, with its own figures, on this partition: not "execution failed".
    key = dg.AssetCheckKey(dg.AssetKey("company_profiles"), "item_success_rate")
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    assert record.run_id == result.run_id
    evaluation = record.event.dagster_event.event_specific_data
    assert evaluation.passed is False and evaluation.partition == shard
    assert evaluation.metadata["items_failed"].value == len(broken)
    assert evaluation.metadata["items_attempted"].value == len(members)

    # The partition's reason: which symbols, what FMP answered, what to do.
    observations = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("company_profiles"), asset_partitions=[shard]), limit=1).records
    observation = observations[0].event_log_entry.asset_observation
    assert observation.partition == shard
    meta = {k: v.value for k, v in observation.metadata.items()}
    assert set(meta["failed_symbols"].split(", ")) == set(broken)
    assert f"{len(broken)} of {len(members)} items failed" in meta["error"]
    assert "500" in meta["fmp_answers"] and broken[0] in meta["fmp_answers"]
    assert "Materialize… → Failed" in meta["next_action"] and "backfill-failed" in meta["next_action"]
    assert "test-key" not in str(meta)
    assert observation.description.startswith("Failed: ")

    # Under the threshold the check passes, naming nothing as failed.
    result = materialize(platform, "company_profiles", shard, refresh=True)
    assert result.success
    assert {(e.check_name, e.passed, e.partition) for e in result.get_asset_check_evaluations()} >= {
        ("item_success_rate", True, shard), ("profiles_fresh", True, shard)}


def test_a_cancel_landing_while_the_figures_are_recorded_does_not_lose_them(platform, monkeypatch):
    """Dagster cancels a run by signalling its step; the figures still reach metrics.*."""
    assert materialize(platform, "symbols").success
    shard, _ = largest_shard(platform)
    record = metrics.record

    def cancelled_meanwhile(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # arrives at the next bytecode, as a cancel would
        return record(*args, **kwargs)

    monkeypatch.setattr(metrics, "record", cancelled_meanwhile)
    result = materialize(platform, "company_profiles", shard)
    assert not result.success  # the cancel still ends the run
    (status, api_calls), = platform.sql("SELECT status, api_calls FROM metrics.runs WHERE run_id = ?",
                                        [result.run_id])
    assert api_calls > 0 and status == "succeeded"  # the work was done before the cancel came
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "Interrupt" in failure.cls_name, failure.cls_name


def test_every_column_of_every_asset_has_a_description():
    graph = defs().get_repository_def().asset_graph
    for key in graph.get_all_asset_keys():
        schema = graph.get(key).metadata["dagster/column_schema"]
        table = {"symbols": "market.symbols", "splits": "market.splits", "daily_prices": "market.prices", "price_history": "market.prices",
                 "dividends": "market.dividends", "dividend_history": "market.dividends",
                 "company_profiles": "market.company_profiles"}[key.to_user_string()]
        assert [c.name for c in schema.columns] == TABLES[table].column_names
        assert all(c.description and c.description.strip() for c in schema.columns), key
    for table in TABLES.values():
        assert all(column.description.strip() for column in table.columns), table.name
