"""Benchmark of the daily sync after a first load, side by side in one run (not part of the tests).

    .venv/bin/python bench/bench_daily.py                     # 19,205 symbols: ~30 min
    .venv/bin/python bench/bench_daily.py --symbols 2000      # same shape, smaller
    .venv/bin/python bench/bench_daily.py --work DIR          # reuse DIR's first load
    .venv/bin/python bench/bench_daily.py --with-daemon       # also the daily sync under `dagster dev`

The clock is pinned (STOCK_ASSETS_NOW, which the simulator follows too): the first load on the
evening of Thursday 2026-12-03, every daily case on the evening of Friday 2026-12-04, so the
figures do not depend on the hour the benchmark runs. The simulator has FMP's ordinary bad days
on (its defaults: revisions, short screener pages and a 5,000-row page cap, specials...).

1. First load at Ultimate's pace, by each code on its own folder (each daily case starts from
   the state its own code leaves): `stock-assets sync` on an empty folder against the simulator
   (its own process) at 3,000 calls/min with 60 ms latency.
2. From a copy of that state each (every full profile made 30 days older, so that today's refresh
   turn is due, as on an ordinary day of a steady cycle):
   - today's code and the baseline (`--baseline`, default: main before the convergence work), headless,
     on Premium (750 calls/min) and on Ultimate (3,000/min);
   - with `--with-daemon`, today's code under `dagster dev` (the schedule's job, sensor, queue).
   Each: calls (from the simulator's request log), Dagster runs of the sync, wall time, and the
   rate-limit bound (calls / the limit's rate).
3. How many sessions a revision takes to reach the warehouse, from today's code's rules
   (`stock_assets.revisions`), checked by the month-long scenario test.
Goals (issue: the warehouse converges to the source): Premium calls <= 2,000, Ultimate calls <= 20,
no more runs than the baseline on the same day; a revision within one profile cycle on Premium,
within 5 sessions on Ultimate.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_daemon import daemon  # noqa: E402
from bench.bench_sync import KEY, Simulator  # noqa: E402
from stock_assets.fmp import DEFAULT_PACE_FRACTION  # noqa: E402
from stock_assets.runs.instance_health import descendants  # noqa: E402

BASELINE = "bc95a78"  # main before the convergence work
FIRST_LOAD_AT = "2026-12-03T18:00:00-05:00"  # Thursday evening, two hours after the close
DAILY_AT = "2026-12-04T18:00:00-05:00"  # Friday evening: the next session's sync
PREMIUM, ULTIMATE = 750, 3000
LATENCY_MS, JITTER_MS = 60.0, 20.0


class PeakMemory:
    """The highest resident set (VmHWM) of any process descended from `pid`, polled."""

    def __init__(self, pid: int):
        self.pid, self.peak_kb, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            for pid in descendants(self.pid) | {self.pid}:
                try:
                    text = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in text.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def environment(work: Path, sim: Simulator, plan: str, limit: int, now: str) -> dict[str, str]:
    return {**os.environ, "STOCK_ASSETS_NOW": now, "FMP_API_KEY": KEY, "FMP_PLAN": plan, "FMP_BASE_URL": sim.base_url,
            "FMP_RATE_LIMIT_PER_MIN": str(limit), "DAGSTER_HOME": str(work / "dagster_home"),
            "STOCK_ASSETS_DB": str(work / "stocks.sqlite"), "FMP_LIMITER_STATE": str(work / "limit.sqlite"),
            # named: a copied lake reads and writes its own Parquet files, not the original's
            "STOCK_ASSETS_DATA": str(work / "lake-files")}


def sync(env: dict[str, str], work: Path, code: Path = ROOT) -> dict[str, float]:
    """`stock-assets sync` (the code at `code`): wall, CPU seconds of all its processes, peak memory."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    command = [sys.executable, "-m", "stock_assets.cli", "sync"]
    if code != ROOT:
        command = faketime(env["STOCK_ASSETS_NOW"]) + command
    with open(work / "sync.log", "a") as out:
        proc = subprocess.Popen(command, cwd=code, env={**env, "PYTHONPATH": str(code), "TZ": "UTC"}, stdout=out,
                                stderr=subprocess.STDOUT)
        memory = PeakMemory(proc.pid)
        code_ = proc.wait()
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code_ != 0:
        raise SystemExit(f"stock-assets sync failed (exit {code_}); see {work / 'sync.log'}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "peak_mb": memory.stop()}


def faketime(now: str) -> list[str]:
    """The baseline's code has no settable clock (STOCK_ASSETS_NOW came with this work): Debian's
    `faketime` (libfaketime) starts its clock at the same instant, ticking from there."""
    if not shutil.which("faketime"):
        raise SystemExit("The baseline runs under Debian's faketime: apt-get install faketime")
    import datetime as dt

    start = dt.datetime.fromisoformat(now).astimezone(dt.timezone.utc)
    return ["faketime", "-f", f"@{start:%Y-%m-%d %H:%M:%S}"]


def sync_runs(home: Path) -> int:
    """Runs of the newest sync (the runs that share its sync tag)."""
    from stock_assets.tags import SYNC_TAG

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        newest = runs[0].tags.get(SYNC_TAG)
        return sum(1 for r in runs if r.tags.get(SYNC_TAG) == newest)


def first_load(args, work: Path, code: Path) -> None:
    (work / "dagster_home").mkdir(parents=True)
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", work / "dagster_home" / "dagster.yaml")
    sim = Simulator(args.symbols, ULTIMATE, LATENCY_MS, JITTER_MS, work / "first.jsonl", plan="ultimate",
                    now=FIRST_LOAD_AT)
    try:
        figures = sync(environment(work, sim, "ultimate", ULTIMATE, FIRST_LOAD_AT), work, code)
        calls = sim.requests()
        sim_cpu = cpu_seconds(sim.proc.pid)
    finally:
        sim.stop()
    pace = ULTIMATE * DEFAULT_PACE_FRACTION / 60
    history = sum(1 for r in calls if r["path"] in ("historical-price-eod/full", "dividends"))
    who = "today's code" if code == ROOT else "baseline"
    print(f"first load ({who}), Ultimate {ULTIMATE}/min (pace {pace:.0f}/s), latency {LATENCY_MS:.0f}+{JITTER_MS:.0f} ms: "
          f"{len(calls):,} calls ({history:,} history) in {figures['wall_s']:.1f} s")
    print(f"  rate / pace = {len(calls) / figures['wall_s']:.2f}/s / {pace:.0f}/s = "
          f"{len(calls) / figures['wall_s'] / pace:.3f} (goal >= 0.95)")
    print(f"  CPU {figures['cpu_s']:.0f} s in {figures['wall_s']:.0f} s = {figures['cpu_s'] / figures['wall_s']:.2f} "
          f"cores; {1000 * figures['cpu_s'] / max(1, len(calls)):.1f} CPU-s per 1,000 calls, so 2 cores alone "
          f"would hold {2 * len(calls) / figures['cpu_s']:.0f} calls/s")
    print(f"  the simulator's CPU beside it: {sim_cpu:.0f} s ({1000 * sim_cpu / max(1, len(calls)):.1f} CPU-s per "
          f"1,000 calls): sync and simulator together {figures['cpu_s'] + sim_cpu:.0f} CPU-s of the "
          f"{2 * figures['wall_s']:.0f} two cores had")
    print(f"  peak resident memory of one process: {figures['peak_mb']:.0f} MB (goal <= 1024)", flush=True)


def daily_case(name: str, state: Path, work: Path, args, plan: str, limit: int, code: Path = ROOT,
               under_daemon: bool = False, profiles_older_by_days: int = 30) -> dict[str, float]:
    shutil.copytree(state, work, ignore=shutil.ignore_patterns("*.jsonl", "sync.log", "cache"))
    age_profiles(work, profiles_older_by_days)
    sim = Simulator(args.symbols, limit, LATENCY_MS, JITTER_MS, work / "daily.jsonl", plan=plan, now=DAILY_AT)
    try:
        env = environment(work, sim, plan, limit, DAILY_AT)
        if under_daemon:
            ran = daemon(work, env, timeout_s=3600)
            figures = {"wall_s": ran["wall_s"], "peak_mb": float("nan")}
            runs = ran["runs"] - _runs_before(state)
        else:
            figures = sync(env, work, code)
            runs = sync_runs(work / "dagster_home")
        calls = sim.requests()
    finally:
        sim.stop()
    bound = len(calls) / (limit / 60)
    by_path = dict(collections.Counter(r["path"] for r in calls).most_common())
    row = {"name": name, "calls": len(calls), "runs": runs, "wall_s": figures["wall_s"], "bound_s": bound,
           "peak_mb": figures["peak_mb"], "by_path": by_path}
    print(f"{name:<44}{row['calls']:>7,}{row['runs']:>6}{row['wall_s']:>9.1f}{bound:>9.1f}"
          f"{row['wall_s'] / max(bound, 1e-9):>10.2f}   {by_path}", flush=True)
    return row


def age_profiles(work: Path, days: int) -> None:
    """An ordinary day of the code's steady cycle: today's turn due, and only it. The full profiles
    (a day old in the state) are made `days` older: 30 more for today's code (31 days: due, yet
    due for none of the earlier turns), none for the baseline (its slot: a day old)."""
    from stock_assets.warehouse import WarehouseResource

    lake = WarehouseResource(database=str(work / "stocks.sqlite"), data_path=str(work / "lake-files"))
    lake.transaction(lambda conn: conn.execute(
        "UPDATE market.company_profiles SET fetched_at = fetched_at - to_days(CAST(? AS INTEGER))", [days]))


def _runs_before(state: Path) -> int:
    with dg.DagsterInstance.from_config(str(state / "dagster_home")) as instance:
        return len(instance.get_runs())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=19205)
    parser.add_argument("--work", type=Path, help="a folder of an earlier run: reuse its first load")
    parser.add_argument("--baseline", default=BASELINE, help="the commit to compare with")
    parser.add_argument("--with-daemon", action="store_true", help="also the daily sync under `dagster dev`")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-daily-"))
    state = work / "first-load"
    print(f"universe {args.symbols} symbols; work folder {work}", flush=True)
    baseline = work / "baseline-code"
    subprocess.check_call(["git", "-C", str(ROOT), "worktree", "add", "--force", "--detach", str(baseline),
                           args.baseline], stdout=subprocess.DEVNULL)
    try:
        for code, folder in ((ROOT, state), (baseline, work / "first-load-baseline")):
            if not (folder / "stocks.sqlite").exists():
                first_load(args, folder, code)
        compare(args, work, state, work / "first-load-baseline", baseline)
    finally:
        subprocess.call(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)])


def compare(args, work: Path, state: Path, baseline_state: Path, baseline: Path) -> None:
    from stock_assets import revisions
    from stock_assets.profile_refresh import cycle_sessions

    cases = work / "cases"
    shutil.rmtree(cases, ignore_errors=True)
    print(f"\ndaily sync after the first load, latency {LATENCY_MS:.0f}+{JITTER_MS:.0f} ms")
    print(f"{'case':<44}{'calls':>7}{'runs':>6}{'wall s':>9}{'bound s':>9}{'wall/bound':>10}   calls by endpoint")
    ours = daily_case("Premium, headless", state, cases / "ours", args, "premium", PREMIUM)
    before = daily_case(f"Premium, headless, baseline {args.baseline}", baseline_state, cases / "baseline", args,
                        "premium", PREMIUM, code=baseline)
    ultimate = daily_case("Ultimate, headless", state, cases / "ultimate", args, "ultimate", ULTIMATE)
    ultimate_before = daily_case(f"Ultimate, headless, baseline {args.baseline}", baseline_state,
                                 cases / "ultimate-baseline", args, "ultimate", ULTIMATE, code=baseline)
    if args.with_daemon:
        dev = daily_case("Premium, dagster dev (schedule's job + sensor)", state, cases / "daemon", args, "premium",
                         PREMIUM, under_daemon=True)
        print(f"daemon path: {dev['wall_s']:.1f} s = {dev['wall_s'] / ours['wall_s']:.2f} x headless, "
              f"{dev['runs']} runs")
    print(f"\nPremium: calls {ours['calls']:,} (goal <= 2,000; baseline {before['calls']:,}), runs {ours['runs']} "
          f"(goal <= the baseline's {before['runs']}), wall {ours['wall_s']:.1f} s (baseline {before['wall_s']:.1f} s)")
    print(f"Ultimate: calls {ultimate['calls']} (goal <= 20; baseline {ultimate_before['calls']}), runs "
          f"{ultimate['runs']} (baseline {ultimate_before['runs']}), wall {ultimate['wall_s']:.1f} s (baseline "
          f"{ultimate_before['wall_s']:.1f} s)")
    print(f"a revision reaches the warehouse: Premium within one profile cycle ({cycle_sessions(30)} sessions: its "
          f"symbol's next turn reads {cycle_sessions(30) + max(revisions.RECHECK_LAGS)} sessions back); Ultimate "
          f"within {max(revisions.RECHECK_LAGS)} sessions of its bar (each session read again "
          f"{' and '.join(map(str, revisions.RECHECK_LAGS))} sessions after it), when FMP makes it within that")


if __name__ == "__main__":
    main()
