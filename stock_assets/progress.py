"""How `stock-assets sync` shows its progress: a bar on a terminal, plain lines otherwise.

Inside each run, long materializations log done/total, rate and ETA into
Dagster's log every few seconds (see `fmp.chunking.Progress`); this is the
sync-level view: runs done out of runs planned.
"""

from __future__ import annotations

import sys
from typing import Protocol


class Reporter(Protocol):
    def say(self, line: str) -> None: ...
    def planned(self, runs: int) -> None: ...
    def finished(self, line: str, ok: bool) -> None: ...
    def close(self) -> None: ...


class PlainReporter:
    """One line per event: for logs, pipes and CI (or any `write(line)` callable)."""

    def __init__(self, stream=None, write=None):
        self.stream = stream or sys.stdout
        self.write = write
        self.total = self.done = 0

    def say(self, line: str) -> None:
        if self.write is not None:
            self.write(line)
        else:
            print(line, file=self.stream, flush=True)

    def planned(self, runs: int) -> None:
        self.total += runs
        self.say(f"  {runs} runs planned")

    def finished(self, line: str, ok: bool) -> None:
        self.done += 1
        self.say(f"  [{self.done}/{self.total}] {line}")

    def close(self) -> None:
        pass


class BarReporter(PlainReporter):
    """A live progress bar (rich) under the run lines: for a person at a terminal."""

    def __init__(self):
        super().__init__()
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("sync"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  transient=True)
        self._task = self._progress.add_task("runs", total=None)
        self._progress.start()

    def say(self, line: str) -> None:
        self._progress.console.print(line, highlight=False)

    def planned(self, runs: int) -> None:
        self.total += runs
        self._progress.update(self._task, total=self.total)

    def finished(self, line: str, ok: bool) -> None:
        self.done += 1
        self._progress.console.print(line, highlight=False, style=None if ok else "bold red")
        self._progress.update(self._task, completed=self.done)

    def close(self) -> None:
        self._progress.stop()


def reporter_for(stream=None) -> Reporter:
    stream = stream or sys.stdout
    return BarReporter() if stream.isatty() else PlainReporter(stream)
