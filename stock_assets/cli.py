"""`stock-assets`: simulate, sync, report, sql, migrate, backfill-failed, ui.

Arguments and configuration are checked before any work: a problem is one
line on stderr and exit code 2, with no run started and nothing stored
changed. A command that ran and failed exits 1, with a short summary and
only the advice that can help; one interrupted by Ctrl-C (SIGINT) or SIGTERM
stops its runs within seconds and exits 130 or 143.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import subprocess
import sys

from stock_assets import clock
from stock_assets.config import Config
from stock_assets.errors import CommandError, ConfigError

BACKFILL_ADVICE = "Run `stock-assets backfill-failed` to fetch only what is missing."


def cmd_simulate(args: argparse.Namespace, _: Config) -> int:
    from fmp_simulator import config_from_args, serve

    config, host, port = config_from_args(args)
    if config.now is None:  # no --now: the platform's clock (STOCK_ASSETS_NOW pins it)
        config.now = clock.now
    print(f"FMP simulator on http://{host}:{port}/stable ({config.n_symbols} symbols, "
          f"{config.plan} plan, keys: {len(config.api_keys)}). Ctrl-C stops it.", flush=True)
    serve(config, host, port)
    return 0


def cmd_sync(args: argparse.Namespace, config: Config) -> int:
    day = session_day(args.date, config)
    from stock_assets.runs.home import command_lock
    from stock_assets.local_api import fmp_environment
    from stock_assets.runs.sync import new_sync_id, run_sync

    sync_id = new_sync_id()
    with command_lock(config.dagster_home, "sync"), fmp_environment(config) as config:
        outcome, stopped = _with_progress(lambda reporter: run_sync(config, day, reporter, sync_id=sync_id),
                                          config, "sync", sync_id)
        if stopped is not None:
            return stopped
    if any(run.success for run in outcome.runs):  # else there are no figures worth a table
        _print_report(config, outcome.sync_id)
    print(f"\nSync {outcome.sync_id}: {len(outcome.runs) - len(outcome.failed)} of "
          f"{len(outcome.runs)} runs succeeded in {outcome.seconds:.1f}s.")
    _print_failures(outcome.failed)
    return 0 if outcome.success else 1


def session_day(text: str | None, config: Config) -> dt.date | None:
    """`--date`, checked against the trading-day partitions: None means the last closed session."""
    if text is None:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--date {text!r} is not a date: use YYYY-MM-DD.") from None
    from stock_assets.defs.partitions import latest_session_day

    first = config.trading_days_start
    latest = latest_session_day()
    if day.weekday() >= 5:
        raise ConfigError(f"--date {day} is a {day:%A}, not a trading day: pick a weekday "
                          f"(holidays are partitions too, and sync as 'market closed').")
    if day < first:
        raise ConfigError(f"--date {day} is before the first trading-day partition, {first} "
                          f"(STOCK_ASSETS_START): pick a later day, or set STOCK_ASSETS_START earlier.")
    if day > latest:
        raise ConfigError(f"--date {day} has no closed session yet: the latest is {latest}.")
    return day


def _with_progress(work, config: Config, command: str, batch_id: str):
    """`work(reporter)` under a progress reporter, with Ctrl-C and SIGTERM as a clean stop.

    Returns (what work returned, None), or (None, the exit code) after an
    interruption, whose summary has been printed.
    """
    from stock_assets.progress import reporter_for
    from stock_assets.runs.runner import Interrupted, interruptible

    reporter = reporter_for()
    try:
        with interruptible():
            return work(reporter), None
    except Interrupted as stop:
        interruption = stop
    finally:
        reporter.close()  # the progress bar goes before any summary
    return None, _interrupted(interruption, config, command, batch_id)


def _interrupted(stop, config: Config, command: str, batch_id: str) -> int:
    """After Ctrl-C or SIGTERM: mark what was left in progress, say what happened and what next."""
    from stock_assets.runs.home import open_instance
    from stock_assets.runs.instance_health import reap_dead_runs
    from stock_assets.runs.runner import runs_of_batch

    instance = open_instance(config.dagster_home)
    reap_dead_runs(instance)
    runs = runs_of_batch(instance, batch_id)
    done = [r for r in runs if r.status.value == "SUCCESS"]
    stopped = [r for r in runs if r.status.value != "SUCCESS"]
    print(f"\n{command} {batch_id} interrupted ({stop}): {len(done)} run(s) had finished; "
          f"{len(stopped)} stopped and marked failed"
          + (": " + "; ".join(_describe_run(r) for r in stopped) if stopped else "") + ".")
    print("What was fetched before the interruption is stored. " + BACKFILL_ADVICE)
    return stop.exit_code


def _describe_run(run) -> str:
    from stock_assets.defs.partitions import partition_label
    from stock_assets.runs.plan import PARTITION_TAG, shards_of_run

    assets = ", ".join(sorted(run.step_keys_to_execute or ()))
    partition = run.tags.get(PARTITION_TAG) or partition_label(shards_of_run(run.tags))
    return f"{assets} [{partition}]" if partition else assets


def _print_failures(failed) -> None:
    """Which runs failed, the first error in one line, and only advice that can help."""
    if not failed:
        return
    print("Failed: " + "; ".join(r.description for r in failed))
    first = next((r.error for r in failed if r.error), None)
    if first:
        print(f"First error: {first}")
    # An error that names a setting to check is its own advice: running again cannot help.
    if not (first and any(name in first for name in ("FMP_API_KEY", "FMP_PLAN", "FMP_BASE_URL"))):
        print(BACKFILL_ADVICE)


def _print_report(config: Config, sync_id: str | None) -> None:
    from stock_assets.report import print_report
    from stock_assets.defs.resources import warehouse_resource

    try:
        print_report(warehouse_resource(config), sync_id=sync_id)
    except Exception as error:  # noqa: BLE001 - the sync's own summary follows regardless
        print(f"The sync's figures could not be read: {type(error).__name__}: {error}")


def cmd_report(args: argparse.Namespace, config: Config) -> int:
    from stock_assets.report import main as report_main
    from stock_assets.defs.resources import warehouse_resource

    return report_main(args, warehouse_resource(config))


def cmd_sql(args: argparse.Namespace, config: Config) -> int:
    from stock_assets import query
    from stock_assets.defs.resources import warehouse_resource

    output = "json" if args.json else "csv" if args.csv else "table"
    return query.run(warehouse_resource(config), args.query, as_of=args.as_of, output=output)


def cmd_migrate(args: argparse.Namespace, config: Config) -> int:
    from pathlib import Path

    from stock_assets.defs.resources import warehouse_resource
    from stock_assets.warehouse.migrate import migrate

    warehouse = warehouse_resource(config)
    moved = migrate(warehouse, Path(args.source).expanduser())
    width = max(len(m.table) for m in moved) if moved else 5
    for m in moved:
        behind = f"  (left behind: {', '.join(m.left_behind)})" if m.left_behind else ""
        print(f"  {m.table:<{width}}  {m.rows:>12,} rows  checksum {m.checksum}{behind}")
    print(f"Moved {len(moved)} tables, {sum(m.rows for m in moved):,} rows, into {warehouse.describe()}: row counts "
          f"and checksums equal the old file's. The old file is untouched; remove it when you are content.")
    return 0


def cmd_backfill_failed(args: argparse.Namespace, config: Config) -> int:
    from stock_assets.runs.plan import check_asset_names

    only = check_asset_names(args.asset) if args.asset else None
    from stock_assets.defs.assets.common import FMP_POOL
    from stock_assets.held_partitions import report_held_partitions
    from stock_assets.runs.home import command_lock, open_instance
    from stock_assets.defs.partitions import trading_days_from
    from stock_assets.local_api import fmp_environment
    from stock_assets.runs.instance_health import prepare
    from stock_assets.runs.plan import failed_and_missing
    from stock_assets.runs.recovery import new_backfill_id, relaunch
    from stock_assets.defs.resources import warehouse_resource

    backfill_id = new_backfill_id()
    with command_lock(config.dagster_home, "backfill-failed"), fmp_environment(config) as config:
        instance = open_instance(config.dagster_home)
        runs_at_once = prepare(instance, FMP_POOL, print)
        warehouse = warehouse_resource(config)
        held_days = trading_days_from(config.trading_days_start)
        if warehouse.exists():  # what the warehouse holds is not missing
            report_held_partitions(instance, warehouse, held_days)
        todo = failed_and_missing(instance, config, only, args.all_missing)
        if not todo:
            print("Nothing failed or missing: every partition is materialized.")
            return 0
        print(f"Launching {len(todo)} run(s) for failed and missing partitions:")
        for item in todo:
            print(f"  {item.describe()}")
        if args.dry_run:
            return 0
        outcomes, stopped = _with_progress(
            lambda reporter: relaunch(instance, config, todo, reporter, runs_at_once, backfill_id=backfill_id),
            config, "backfill", backfill_id)
        if stopped is not None:
            return stopped
        report_held_partitions(instance, warehouse, held_days)
    failed = [o for o in outcomes if not o.success]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} runs succeeded.")
    _print_failures(failed)
    return 1 if failed else 0


def cmd_ui(args: argparse.Namespace, config: Config) -> int:
    """`dagster dev` on the project's instance, with a simulator when no key is set."""
    from stock_assets.runs.home import open_instance
    from stock_assets.local_api import fmp_environment

    open_instance(config.dagster_home)
    with fmp_environment(config):
        command = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml",
                   "-h", args.host, "-p", str(args.port)]
        return subprocess.call(command, env={**os.environ, "DAGSTER_HOME": str(config.dagster_home)})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stock-assets", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    from fmp_simulator import add_arguments

    simulate = sub.add_parser("simulate", help="serve the FMP simulator")
    add_arguments(simulate)
    simulate.set_defaults(func=cmd_simulate)

    sync = sub.add_parser("sync", help="run the daily sync headless and print its summary")
    sync.add_argument("--date", help="the session to sync (YYYY-MM-DD); default: the last closed one")
    sync.set_defaults(func=cmd_sync)

    report = sub.add_parser("report", help="summary of the latest sync")
    report.add_argument("--history", type=int, metavar="N", help="trend over the last N syncs")
    report.add_argument("--json", action="store_true", help="one JSON document")
    report.add_argument("--plot", metavar="FILE.png", help="chart of duration and calls per sync")
    report.set_defaults(func=cmd_report)

    sql = sub.add_parser("sql", help="query the warehouse read-only (now, or as of a past sync)")
    sql.add_argument("query", help='SQL, e.g. "SELECT count(*) FROM market.prices"')
    form = sql.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="rows as a JSON list of objects")
    form.add_argument("--csv", action="store_true", help="rows as CSV with a header")
    sql.add_argument("--as-of", metavar="WHEN", help="a sync or backfill id, a date or moment (New York "
                                                     "time), or a snapshot id: the warehouse as it was then")
    sql.set_defaults(func=cmd_sql)

    migrate = sub.add_parser("migrate", help="move a DuckDB-file warehouse (before the lake) into the lake, once")
    migrate.add_argument("--from", dest="source", default="data/stocks.duckdb",
                         help="the old warehouse file (default: data/stocks.duckdb)")
    migrate.set_defaults(func=cmd_migrate)

    backfill = sub.add_parser("backfill-failed", help="run only the failed and missing partitions")
    backfill.add_argument("--asset", action="append", help="limit to this asset key (repeatable)")
    backfill.add_argument("--all-missing", action="store_true",
                          help="also every never-run day since the partitions' start, not only gaps")
    backfill.add_argument("--dry-run", action="store_true", help="print what would run")
    backfill.set_defaults(func=cmd_backfill_failed)

    ui = sub.add_parser("ui", help="the Dagster UI on the project's instance")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)  # usage errors: argparse's one line, exit 2
    try:
        return args.func(args, Config.from_env())  # the configuration, read and checked once
    except ConfigError as error:
        print(f"stock-assets {args.command}: {error}", file=sys.stderr)
        return 2
    except CommandError as error:
        print(f"stock-assets {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
