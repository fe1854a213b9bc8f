"""SQLite's writer gate on a real database file: transactions of different processes (here: Database
objects) take turns at it, a wait past the busy timeout is `DatabaseBusy` with nothing done, and the gate
is free again after a failed transaction and after the death of a process that held it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from estafeta.store.db import Database, DatabaseBusy

HOLD = """
import sys, time
from estafeta.store.db import Database
db = Database(sys.argv[1])
def hold(conn):
    print("inside", flush=True)
    time.sleep(60)
db.call(hold)
"""


def _one(conn: Connection) -> int:
    return int(conn.execute(text("SELECT 1")).scalar_one())


def test_a_transaction_waits_its_turn_and_is_busy_past_the_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gate.db'}"
    holder, other = Database(url), Database(url, busy_timeout=0.2)
    inside, leave = threading.Event(), threading.Event()

    def hold(conn: Connection) -> None:
        inside.set()
        leave.wait(10)

    thread = threading.Thread(target=holder.call, args=(hold,))
    thread.start()
    try:
        assert inside.wait(10)
        with pytest.raises(DatabaseBusy):
            other.call(_one)
    finally:
        leave.set()
        thread.join()
    assert other.call(_one) == 1
    assert (tmp_path / "gate.db-gate").exists()
    holder.close()
    other.close()


def test_the_gate_is_free_after_a_failed_transaction(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'gate.db'}", busy_timeout=0.2)

    def fail(conn: Connection) -> None:
        raise RuntimeError("the work failed")

    with pytest.raises(RuntimeError):
        db.call(fail)
    assert db.call(_one) == 1
    db.close()


def test_the_gate_is_free_once_a_process_holding_it_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "gate.db"
    src = Path(__file__).parents[1] / "src"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, f"sqlite:///{path}"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "inside"
        db = Database(f"sqlite:///{path}", busy_timeout=0.2)
        with pytest.raises(DatabaseBusy):
            db.call(_one)
    finally:
        holder.kill()
        holder.wait()
    assert db.call(_one) == 1
    db.close()
