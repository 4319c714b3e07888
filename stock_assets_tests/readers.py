"""A reader of the lake in a process of its own, as a user's notebook is: the README's ATTACH,
read-only. It keeps a transaction open on a second connection the whole time (a notebook left
open), and each `ask()` answers from a fresh transaction: the snapshot it read and what it saw.
Afterwards, every answer can be checked against its snapshot (`AT (VERSION => n)`)."""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb

from stock_assets.warehouse import WarehouseResource

READER = """
import json, sys
import duckdb
from stock_assets.warehouse import extensions
conn = duckdb.connect()
extensions.load(conn)
conn.execute(sys.argv[1])
conn.execute("USE lake")
left_open = conn.cursor()
left_open.execute("USE lake; BEGIN TRANSACTION")
left_open.execute("SELECT count(*) FROM market.prices").fetchall()
print("open", flush=True)
while True:
    line = sys.stdin.readline()
    if not line or line.strip() == "stop":
        break
    conn.execute("BEGIN TRANSACTION")
    (snapshot,), = conn.execute("SELECT id FROM lake.current_snapshot()").fetchall()
    seen = conn.execute(sys.argv[2]).fetchall()
    conn.execute("COMMIT")
    print(json.dumps([snapshot, [list(row) for row in seen]], default=str), flush=True)
"""

# Exact figures (integers), so an answer equals its snapshot's or it does not. `{at}` is where the
# check puts `AT (VERSION => n)`.
QUESTION = ("SELECT (SELECT count(*) FROM market.prices{at}), "
            "(SELECT sum(round(close * 10000)::BIGINT) FROM market.prices{at}), "
            "(SELECT count(*) FROM market.symbols{at}), (SELECT count(*) FROM metrics.runs{at})")


class LakeReader:
    def __init__(self, warehouse: WarehouseResource):
        self.answers: list[tuple[int, list]] = []
        self.process = subprocess.Popen(
            [sys.executable, "-c", READER, warehouse.attach_sql(read_only=True), QUESTION.format(at="")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.process.stdout.readline().strip() == "open"

    def ask(self) -> None:
        self.process.stdin.write("ask\n")
        self.process.stdin.flush()
        snapshot, seen = json.loads(self.process.stdout.readline())
        self.answers.append((snapshot, seen))

    def stop(self) -> None:
        try:
            self.process.stdin.write("stop\n")
            self.process.stdin.flush()
            self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            self.process.kill()
            self.process.wait()

    def snapshots_seen(self) -> set[int]:
        return {snapshot for snapshot, _ in self.answers}

    def assert_every_answer_was_a_committed_snapshot(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Each answer is exactly what its snapshot holds: never a commit half seen."""
        assert self.answers
        for snapshot, seen in self.answers:
            at = QUESTION.format(at=f" AT (VERSION => {snapshot})")
            assert [list(row) for row in conn.execute(at).fetchall()] == seen, f"snapshot {snapshot}"
