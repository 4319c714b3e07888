"""The Dagster UI as a user starts it, for the browser test.

`dagster_dev(...)` runs `dagster dev` (webserver + daemon) from the project
root on the instance in `DAGSTER_HOME`, on a free loopback port, waits until
the webserver answers and the code location has loaded, and always ends the
whole process group (webserver, daemon, code servers, run workers) on exit.
`launch_chromium()` starts Debian's Chromium headless through Playwright.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
ARTIFACTS = PROJECT / "test-artifacts"

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # No calls home: the CI machines have no internet and refuse such connections.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

_LOCATION_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation { repositories { name } }
        }
      }
    }
  }
}
"""


_LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""


STALL_S = 240  # a run under the daemon takes 4-10 s alone here; minutes without one ending is a stall


def wait_while_moving(what: str, observe, stall_s: float = STALL_S, log=lambda: ""):
    """Wait for runs without a deadline on the whole: `observe()` gives `(result, progress)`; the
    wait returns the first truthy result, and fails only when `progress` (the runs seen and
    finished) stays the same for `stall_s`. A loaded machine makes runs slow, not stuck."""
    last, moved = None, time.monotonic()
    while True:
        result, progress = observe()
        if result:
            return result
        if progress != last:
            last, moved = progress, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            raise AssertionError(f"{what}: no progress for {stall_s:.0f} s (at {progress})\n{log()}")
        time.sleep(1.0)


def runs_progress(runs) -> tuple[int, int]:
    """What a wait on runs watches move: how many there are, how many have finished."""
    return len(runs), sum(r.is_finished for r in runs)


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM_PATH"), *CHROMIUM_CANDIDATES, shutil.which("chromium")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DagsterUI:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def launch_job(self, job: str, tags: dict[str, str] | None = None) -> str:
        """Launch one of the code location's jobs as the UI's Launchpad (or a schedule) does; its run id."""
        answer = self.graphql(_LAUNCH_RUN, {"params": {
            "selector": {"repositoryLocationName": "stock_assets", "repositoryName": "__repository__",
                         "jobName": job},
            "runConfigData": {},
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}}})
        if answer["data"]["launchRun"]["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"could not launch the {job} job: {answer}")
        return answer["data"]["launchRun"]["run"]["runId"]

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 10) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def _wait_until_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                answer = self.graphql(_LOCATION_QUERY, timeout=5)
                entries = answer["data"]["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    errors = [e["locationOrLoadError"] for e in entries
                              if e["locationOrLoadError"]["__typename"] == "PythonError"]
                    if errors:
                        raise RuntimeError(f"the code location failed to load: {errors[0]['message']}")
                    return
                last = f"locations: {[(e['name'], e['loadStatus']) for e in entries]}"
            except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError, TypeError,
                    json.JSONDecodeError) as error:
                last = repr(error)
            time.sleep(0.5)
        raise TimeoutError(f"the Dagster UI did not serve within {timeout:.0f} s ({last}):\n{self.log_tail()}")


def _end_process_group(process: subprocess.Popen, grace: float = 5) -> None:
    """SIGTERM the group (dagster dev shuts its children down), then SIGKILL what is left."""
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    # Whatever survived (code servers, run workers): gone now.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    # The killed children are reaped by init a moment later: wait until the group is gone.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


@contextmanager
def dagster_dev(log_dir: Path, *, start_timeout: float = 90) -> Iterator[DagsterUI]:
    """`dagster dev -w workspace.yaml` on DAGSTER_HOME (taken from the environment)."""
    assert os.environ.get("DAGSTER_HOME"), "DAGSTER_HOME must point at the test's instance"
    log_path = log_dir / "dagster-dev.log"
    for attempt in range(3):
        port = free_port()
        command = [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT / "workspace.yaml"),
                   "-h", "127.0.0.1", "-p", str(port)]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(command, cwd=PROJECT, env=os.environ.copy(), stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        ui = DagsterUI(f"http://127.0.0.1:{port}", process, log_path)
        try:
            try:
                ui._wait_until_serving(start_timeout)
            except RuntimeError:
                # Lost the race for the port to another process: try another one.
                if process.poll() is not None and "address already in use" in ui.log_tail().lower() and attempt < 2:
                    continue
                raise
            yield ui
            return
        finally:
            _end_process_group(process)


@contextmanager
def launch_chromium() -> Iterator[object]:
    """A headless Chromium browser (Playwright's sync API)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError("Chromium is not installed: `apt-get install chromium` (see .ci/run)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
