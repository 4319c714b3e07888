"""Worker processes that execute tasks sent to them and never outlive their parent.

The headless commands (`runner.Workers`) execute runs on such workers: a worker imports
Dagster and the code once and executes runs one after another, where a new
process per run costs ~3.5 s on a busy 2-core machine.

However its parent ends, a worker ends with it:
- it asks the kernel for SIGTERM when its parent dies (Linux's parent-death
  signal, sent when the thread that started it ends; a watchdog thread checks
  the parent's pid elsewhere);
- SIGTERM or SIGINT interrupts its run once: Dagster ends it FAILURE (or
  CANCELED, when the run was being canceled), the chunks already written stay
  written, and a worker that has not exited 15 s after its first signal exits
  hard;
- a run it leaves in progress is marked failed as it exits.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
import traceback

import dagster as dg

from stock_assets.runs.instance_health import fail_own_unfinished_runs

# A worker interrupted by a signal normally ends its run in about a second
# (Dagster records the failure, the metrics are written); past this it exits hard.
HARD_EXIT_AFTER_S = 15.0


class WorkerProcess:
    """A process that executes the tasks it is sent (`task(instance)`), one at a time, until sent None.

    A task is a planned run (`runner.execute`).
    """

    def __init__(self, context, home: str):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, os.getpid(), home), daemon=False,
                                       name="stock-assets-worker")
        self.process.start()
        child.close()

    def send(self, message) -> None:
        try:
            self.conn.send(message)
        except (BrokenPipeError, OSError):
            pass  # it died: its sentinel says so

    def answer(self):
        """What the task it was sent returned; None if it died first (its pipe then reads as EOF)."""
        try:
            return self.conn.recv() if self.conn.poll() else None
        except (EOFError, OSError):
            return None


def _worker_main(conn, parent_pid: int, home: str) -> None:
    """A worker: execute the tasks the parent sends until told to stop, interrupted, or orphaned."""
    _end_with_parent(parent_pid)
    _interrupt_once_on(signal.SIGTERM, signal.SIGINT)
    quiet_interruptions_in_cleanup()
    instance = None
    try:
        instance = dg.DagsterInstance.from_config(home)
        while True:
            message = conn.recv()
            if message is None:
                break
            conn.send(message(instance))  # a task: a planned run
            if _INTERRUPTED.is_set():
                break
    except BaseException as error:
        if not isinstance(error, (EOFError, OSError, KeyboardInterrupt)):
            traceback.print_exc()  # a bug: say where before the hard exit below
        if instance is not None:
            fail_own_unfinished_runs(instance)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # Not a normal exit: the HTTP client's threads may still be waiting on
        # calls nobody needs any more.
        os._exit(0)


_INTERRUPTED = threading.Event()


def _interrupt_once_on(*signums: int) -> None:
    """The first signal interrupts the run in progress; later ones are absorbed.

    A second interruption would break Dagster's own recording of the first
    (the run's failure), leaving the run STARTED.
    """
    def handler(signum, frame):
        if _INTERRUPTED.is_set():
            return
        _INTERRUPTED.set()
        threading.Timer(HARD_EXIT_AFTER_S, os._exit, args=(1,)).start()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in signums:
        signal.signal(signum, handler)


def quiet_interruptions_in_cleanup() -> None:
    """No traceback on the terminal for an interruption that lands in someone's cleanup.

    A signal that arrives while Python runs a destructor is printed as "Exception
    ignored in ..." with a traceback, and one that arrives while a library closes
    a connection is logged by it with one ("Exception closing connection"): on a
    Ctrl-C that is noise. Any other error is printed as before.
    """
    interruptions = (KeyboardInterrupt, dg.DagsterExecutionInterruptedError)  # what Dagster raises for a signal
    default = sys.unraisablehook

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, interruptions):
            default(unraisable)

    def not_an_interruption(record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], interruptions))

    sys.unraisablehook = hook
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(not_an_interruption)


def _end_with_parent(parent_pid: int) -> None:
    """Get SIGTERM when the parent dies, however it dies (SIGKILL included)."""
    PR_SET_PDEATHSIG = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the watchdog below is the only guard
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)

    def watchdog() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watchdog, name="parent-watchdog", daemon=True).start()
