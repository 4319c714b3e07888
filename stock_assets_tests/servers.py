"""Real servers the tests start themselves: Debian's PostgreSQL and Redis, in temporary folders, on free ports.

`make test` installs the packages when they are missing. PostgreSQL refuses to run as root: as root,
the server runs as the `postgres` user the package creates, in a folder that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is missing: `apt-get install postgresql` (`make test` does it)")
    return os.path.dirname(found[-1])


@dataclass(frozen=True)
class Postgres:
    port: int
    database: str
    run_as: tuple[str, ...]
    bindir: str

    @property
    def url(self) -> str:
        return self.url_of(self.database)

    def url_of(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database on this server; its URL."""
        subprocess.run([*self.run_as, f"{self.bindir}/createdb", "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", "postgres", name], check=True, capture_output=True, timeout=60)
        return self.url_of(name)


@contextmanager
def postgres_server(database: str = "stocks") -> Iterator[Postgres]:
    """A PostgreSQL server of its own (fsync off: a test's data need not survive a power cut)."""
    bindir = postgres_bin()
    folder = tempfile.mkdtemp(prefix="stock-assets-pg-")
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(folder, "data"), free_port()

    def pg(*args: str) -> None:
        done = subprocess.run([*run_as, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:1])} failed: {done.stdout[-1000:]} {done.stderr[-1000:]}")

    try:
        pg(f"{bindir}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        pg(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(folder, "log"), "-w", "-t", "60", "-o",
           f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start")
        try:
            server = Postgres(port, database, tuple(run_as), bindir)
            server.create_database(database)
            yield server
        finally:
            pg(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class Redis:
    port: int

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@contextmanager
def redis_server() -> Iterator[Redis]:
    """A Redis server of its own, in memory only (no snapshot, no append-only file)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("Redis is missing: `apt-get install redis-server` (`make test` does it)")
    folder, port = tempfile.mkdtemp(prefix="stock-assets-redis-"), free_port()
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
                               "--save", "", "--appendonly", "no", "--daemonize", "no"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port} (exit code {server.poll()})")
            time.sleep(0.05)
        yield Redis(port)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)
