"""Outcome recording on SQLite and PostgreSQL: a sender's `record` returns once its outcome is committed,
outcomes arriving meanwhile share the next commit, and a refused commit is retried while senders wait."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import Connection, select

from estafeta.clock import ManualClock
from estafeta.config import DeliverySettings
from estafeta.delivery.outcomes import OutcomeRecorder
from estafeta.metrics import CommitWindow, Metrics
from estafeta.outcome import AttemptResult
from estafeta.queue import Queue
from estafeta.store import accounts, messages
from estafeta.store import queue as q
from estafeta.store.db import Database
from estafeta.store.models import Delivery
from tests.factories import new_message


class CountingQueue(Queue):
    """The real queue, remembering the size of each commit."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.commits: list[int] = []

    async def finish(self, results: list[AttemptResult]) -> int:
        self.commits.append(len(results))
        return await super().finish(results)


async def _claimed(db: Database, queue: Queue, count: int) -> list[q.Claimed]:
    clock = ManualClock()
    account = db.call(accounts.create_account, "acme", clock.now())
    rows = [new_message(f"msg_{i:04d}", account.id, [f"user{i}@yahoo.test"]) for i in range(count)]
    db.call(messages.insert_messages, rows, clock.now())
    return await queue.claim(count)


def _delivered(job: q.Claimed) -> AttemptResult:
    return AttemptResult(job, True, 250, "2.0.0 OK", False)


async def test_outcomes_arriving_during_a_commit_share_the_next_and_each_waits_for_its_own(
    db: Database,
) -> None:
    queue = CountingQueue(db, DeliverySettings(), ManualClock(), "w1")
    jobs = await _claimed(db, queue, 60)
    window = CommitWindow()
    recorder = OutcomeRecorder(queue, window)

    async def send_and_record(job: q.Claimed) -> None:
        await recorder.record(_delivered(job), time.monotonic())
        # Returned: its outcome is in the database (what the next transaction on a connection waits for).
        state = await db.run(
            lambda c: c.execute(select(Delivery.state).where(Delivery.id == job.delivery_id)).scalar_one()
        )
        assert state == "delivered"

    await asyncio.gather(*(send_and_record(job) for job in jobs))
    assert sum(queue.commits) == 60 and len(queue.commits) < 60 and max(queue.commits) > 1
    assert window.uncommitted == 0 and 1 <= window.peak <= 60
    assert sum(window.counts) == 60 and window.seconds > 0
    exposed = Metrics()
    exposed.commit_windows.append(lambda: window)
    body = (await exposed.render(db)).decode()
    assert "estafeta_delivery_acknowledged_uncommitted 0.0" in body
    assert f"estafeta_delivery_acknowledged_uncommitted_peak {float(window.peak)}" in body
    assert 'estafeta_delivery_reply_to_commit_seconds_bucket{le="+Inf"} 60.0' in body


def _refuse_events(conn: Connection, refuse: bool) -> None:
    """A database that refuses to record events (a real error from the database itself)."""
    if conn.dialect.name == "sqlite":
        if refuse:
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        else:
            conn.exec_driver_sql("DROP TRIGGER refuse")
    elif refuse:
        conn.exec_driver_sql(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused'; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    else:
        conn.exec_driver_sql("DROP TRIGGER refuse ON events")
        conn.exec_driver_sql("DROP FUNCTION refuse()")


async def test_a_refused_commit_is_retried_while_the_sender_waits(db: Database) -> None:
    queue = Queue(db, DeliverySettings(), ManualClock(), "w1")
    (job,) = await _claimed(db, queue, 1)
    window = CommitWindow()
    recorder = OutcomeRecorder(queue, window)
    db.call(_refuse_events, True)
    recording = asyncio.create_task(recorder.record(_delivered(job), time.monotonic()))
    await asyncio.sleep(0.5)
    assert not recording.done()  # the sender does not go on to its next transaction
    assert window.uncommitted == 1  # and /metrics shows the delivery a crash now would send again
    assert db.call(q.state_counts) == {"queued": 1}
    db.call(_refuse_events, False)
    await asyncio.wait_for(recording, 15)
    assert db.call(q.state_counts) == {"delivered": 1}
    assert window.uncommitted == 0 and await recorder.drain(1.0)
