"""`stock-assets`: simulate, sync, report, backfill-failed, ui."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import subprocess
import sys
from pathlib import Path


def _dagster_home() -> Path:
    """The persistent instance: DAGSTER_HOME, or `dagster_home/` in the project folder."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _instance():
    import dagster as dg

    _dagster_home()
    return dg.DagsterInstance.get()


def cmd_simulate(args: argparse.Namespace) -> int:
    from stock_assets.simulator import config_from_args, serve

    config, host, port = config_from_args(args)
    print(f"FMP simulator on http://{host}:{port}/stable ({config.n_symbols} symbols, "
          f"{config.plan} plan, keys: {len(config.api_keys)}). Ctrl-C stops it.", flush=True)
    serve(config, host, port)
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from stock_assets.local_api import fmp_environment

    from stock_assets.progress import reporter_for

    _dagster_home()
    with fmp_environment():
        from stock_assets.sync import run_sync

        day = dt.date.fromisoformat(args.date) if args.date else None
        reporter = reporter_for()
        try:
            outcome = run_sync(day, reporter)
        finally:
            reporter.close()
    _print_report(outcome.sync_id)
    print(f"\nSync {outcome.sync_id}: {len(outcome.runs) - len(outcome.failed)} of "
          f"{len(outcome.runs)} runs succeeded in {outcome.seconds:.1f}s.")
    if outcome.failed:
        print("Failed: " + "; ".join(r.description for r in outcome.failed))
        print("Run `stock-assets backfill-failed` to fetch only what is missing.")
    return 0 if outcome.success else 1


def _print_report(sync_id: str | None) -> None:
    try:
        from stock_assets.report import print_report
    except ImportError:  # the report arrives with the metrics tables
        return
    print_report(sync_id=sync_id)


def cmd_report(args: argparse.Namespace) -> int:
    from stock_assets.report import main as report_main

    return report_main(args)


def cmd_backfill_failed(args: argparse.Namespace) -> int:
    from stock_assets.local_api import fmp_environment

    with fmp_environment():
        from stock_assets.recovery import failed_and_missing, reap_dead_runs, relaunch

        instance = _instance()
        reaped = reap_dead_runs(instance)
        if reaped:
            print(f"Marked {len(reaped)} run(s) of killed processes as failed.")
        todo = failed_and_missing(instance, set(args.asset) if args.asset else None, args.all_missing)
        if not todo:
            print("Nothing failed or missing: every partition is materialized.")
            return 0
        print(f"Launching {len(todo)} run(s) for failed and missing partitions:")
        for item in todo:
            print(f"  {item.describe()}")
        if args.dry_run:
            return 0
        from stock_assets.progress import reporter_for

        outcomes = relaunch(todo, reporter_for())
    failed = [o for o in outcomes if not o.success]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} runs succeeded.")
    return 1 if failed else 0


def cmd_ui(args: argparse.Namespace) -> int:
    """`dagster dev` on the project's instance, with a simulator when no key is set."""
    from stock_assets.local_api import fmp_environment

    _dagster_home()
    with fmp_environment():
        command = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml",
                   "-h", args.host, "-p", str(args.port)]
        return subprocess.call(command, env=os.environ.copy())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stock-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    from stock_assets.simulator import add_arguments

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
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
