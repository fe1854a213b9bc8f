"""SQLite's writer gate on a real database file: transactions of different processes (here: Database
objects) take turns at it, a wait past the busy timeout is `DatabaseBusy` with nothing done, and the gate
is free again after a failed transaction and after the death of a process that held it. A process waiting
for it gets it as soon as it is released."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from estafeta.store.db import Database, DatabaseBusy
from tests.factories import gate_held

HOLD = """
import sys, time
from estafeta.store.db import Database
db = Database(sys.argv[1])
def hold(conn):
    print("inside", flush=True)
    time.sleep(60)
db.call(hold)
"""

HOLD_UNTIL_TOLD = """
import sys, time
from estafeta.store.db import Database
db = Database(sys.argv[1])
def hold(conn):
    print("inside", flush=True)
    sys.stdin.readline()
    print(time.monotonic(), flush=True)  # leaving: the gate is released right after (CLOCK_MONOTONIC)
db.call(hold)
"""


def _holder(script: str, path: Path, **kwargs: object) -> subprocess.Popen[str]:
    """A process running `script` that holds the gate of the database at `path` once it printed "inside"."""
    holder = subprocess.Popen(
        [sys.executable, "-c", script, f"sqlite:///{path}"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
        **kwargs,  # type: ignore[call-overload]
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "inside"
    return holder


def _one(conn: Connection) -> int:
    return int(conn.execute(text("SELECT 1")).scalar_one())


def test_a_transaction_waits_its_turn_and_is_busy_past_the_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gate.db'}"
    holder, other = Database(url), Database(url, busy_timeout=0.2)
    with gate_held(holder), pytest.raises(DatabaseBusy):
        other.call(_one)
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
    holder = _holder(HOLD, path)
    try:
        db = Database(f"sqlite:///{path}", busy_timeout=0.2)
        with pytest.raises(DatabaseBusy):
            db.call(_one)
    finally:
        holder.kill()
        holder.wait()
    assert db.call(_one) == 1
    db.close()


def test_a_waiting_process_is_busy_at_its_timeout_and_gets_the_gate_as_soon_as_it_is_released(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gate.db"
    holder = _holder(HOLD_UNTIL_TOLD, path, stdin=subprocess.PIPE)
    impatient, patient = Database(f"sqlite:///{path}", busy_timeout=0.3), Database(f"sqlite:///{path}")
    entered: list[float] = []
    waiter = threading.Thread(target=patient.call, args=(lambda conn: entered.append(time.monotonic()),))
    try:
        began = time.monotonic()
        with pytest.raises(DatabaseBusy):
            impatient.call(_one)
        assert 0.3 <= time.monotonic() - began < 1.5

        waiter.start()
        time.sleep(0.75)  # waiting, past the impatient one's timeout
        assert not entered
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("leave\n")
        holder.stdin.flush()
        left = float(holder.stdout.readline())
        waiter.join(10)
        assert holder.wait(10) == 0
    finally:
        holder.kill()
        holder.wait()
    assert len(entered) == 1 and entered[0] - left < 0.05
    assert impatient.call(_one) == 1
    impatient.close()
    patient.close()


async def test_an_inline_transaction_runs_on_the_loop_thread_once_the_gate_is_free(tmp_path: Path) -> None:
    """The loop keeps serving while the gate is held elsewhere; the transaction then runs on its thread."""
    url = f"sqlite:///{tmp_path / 'gate.db'}"
    holder, inline = Database(url), Database(url)
    ran: list[tuple[int, float]] = []

    def note(conn: Connection) -> int:
        ran.append((threading.get_ident(), time.monotonic()))
        return _one(conn)

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    ticker = asyncio.create_task(tick())
    try:
        with gate_held(holder) as released_at:
            waiting = asyncio.create_task(inline.run_inline(note))
            await asyncio.sleep(0.1)
            assert not waiting.done() and not ran
            assert ticks >= 5  # the wait for the gate left the loop free
        assert await asyncio.wait_for(waiting, 10) == 1
    finally:
        ticker.cancel()
    assert ran[0][0] == threading.get_ident()
    assert ran[0][1] >= released_at[0]
    holder.close()
    inline.close()


async def test_an_inline_transaction_is_busy_past_the_timeout_and_frees_the_gate_when_it_fails(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'gate.db'}"
    holder, inline = Database(url), Database(url, busy_timeout=0.2)
    holder.call(lambda conn: conn.execute(text("CREATE TABLE t (x INTEGER)")))
    with gate_held(holder), pytest.raises(DatabaseBusy):
        await inline.run_inline(_one)

    def write_then_fail(conn: Connection) -> None:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        await inline.run_inline(write_then_fail)
    assert holder.call(lambda conn: conn.execute(text("SELECT count(*) FROM t")).scalar_one()) == 0
    assert await asyncio.wait_for(inline.run_inline(_one), 1) == 1  # the gate was given back
    holder.close()
    inline.close()


async def test_inline_transactions_share_one_connection_a_failed_one_leaves_clean(tmp_path: Path) -> None:
    """The loop's turns reuse one pooled connection: after a transaction that failed, the next starts with
    nothing of it (rolled back, no transaction left open), and other processes can write meanwhile. One
    that was invalidated is replaced."""
    url = f"sqlite:///{tmp_path / 'gate.db'}"
    inline, other = Database(url), Database(url)
    other.call(lambda conn: conn.execute(text("CREATE TABLE t (x INTEGER)")))
    connections: dict[int, object] = {}  # the driver connections themselves, so no id is reused

    def seen(conn: Connection) -> int:
        driver = conn.connection.driver_connection
        connections[id(driver)] = driver
        return int(conn.execute(text("SELECT count(*) FROM t")).scalar_one())

    def write_then_fail(conn: Connection) -> None:
        seen(conn)
        conn.execute(text("INSERT INTO t VALUES (1)"))
        raise RuntimeError("refused")

    assert await inline.run_inline(seen) == 0
    with pytest.raises(RuntimeError):
        await inline.run_inline(write_then_fail)
    other.call(lambda conn: conn.execute(text("INSERT INTO t VALUES (2)")))  # no lock left behind
    assert await inline.run_inline(seen) == 1
    assert len(connections) == 1
    (await inline.run_inline(lambda conn: conn)).invalidate()  # as when its driver connection fails
    assert await inline.run_inline(seen) == 1  # on a new connection
    assert len(connections) == 2
    inline.close()
    other.close()
