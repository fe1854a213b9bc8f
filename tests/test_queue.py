"""The durable queue on SQLite and PostgreSQL: leases, crash recovery, fencing, retry schedule."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from estafeta.clock import ManualClock
from estafeta.config import DeliverySettings
from estafeta.outcome import AttemptResult, outcome, retry_delay
from estafeta.queue import Queue
from estafeta.store import accounts, messages
from estafeta.store import queue as q
from estafeta.store.db import Database
from tests.factories import RAW, new_message


def _enqueue(db: Database, clock: ManualClock, count: int) -> int:
    account = db.call(accounts.create_account, "acme", clock.now())
    rows = [new_message(f"msg_{i:04d}", account.id, [f"user{i}@gmail.test"]) for i in range(count)]
    db.call(messages.insert_messages, rows, clock.now())
    return account.id


def _lease(clock: ManualClock, seconds: float = 300) -> tuple:  # type: ignore[type-arg]
    return clock.now(), clock.now() + timedelta(seconds=seconds)


def test_claim_leases_entries_so_no_other_worker_gets_them(db: Database) -> None:
    clock = ManualClock()
    _enqueue(db, clock, 5)
    first = db.call(q.claim, "w1", *_lease(clock), 3)
    second = db.call(q.claim, "w2", *_lease(clock), 10)
    assert len(first) == 3 and len(second) == 2
    assert {c.delivery_id for c in first}.isdisjoint({c.delivery_id for c in second})
    assert db.call(q.claim, "w3", *_lease(clock), 10) == []
    assert first[0].raw == RAW


def test_crashed_workers_entries_are_retried_and_its_late_report_is_ignored(db: Database) -> None:
    clock = ManualClock()
    _enqueue(db, clock, 1)
    (job,) = db.call(q.claim, "crashed", *_lease(clock, 60), 10)
    clock.advance(61)
    (again,) = db.call(q.claim, "rescuer", *_lease(clock, 60), 10)
    assert again.delivery_id == job.delivery_id
    done = q.Finish(job.delivery_id, "delivered", clock.now(), 250, "250 ok", "delivered", {})
    assert db.call(q.finish, "crashed", clock.now(), [done]) == 0  # fenced: lease lost
    assert db.call(q.finish, "rescuer", clock.now(), [done]) == 1
    assert db.call(q.state_counts) == {"delivered": 1}
    clock.advance(10_000)
    assert db.call(q.claim, "anyone", *_lease(clock), 10) == []  # never sent twice


def test_released_entries_are_due_at_once(db: Database) -> None:
    clock = ManualClock()
    _enqueue(db, clock, 2)
    jobs = db.call(q.claim, "w1", *_lease(clock), 10)
    assert db.call(q.release, "w1", [j.delivery_id for j in jobs]) == 2
    assert len(db.call(q.claim, "w2", *_lease(clock), 10)) == 2


async def test_deferral_follows_the_schedule_then_bounces_when_too_old(db: Database) -> None:
    clock = ManualClock()
    _enqueue(db, clock, 1)
    settings = DeliverySettings(retry_schedule=[300, 900], max_age=2000)
    queue = Queue(db, settings, clock, "w1")
    expected_waits = [300, 900, 800]  # the last wait is cut so the final try happens at max_age
    for wait in expected_waits:
        (job,) = await queue.claim(10)
        await queue.finish([AttemptResult(job, False, 451, "4.7.1 try later", True)])
        assert await queue.claim(10) == []
        clock.advance(wait - 1)
        assert await queue.claim(10) == []
        clock.advance(1)
    (job,) = await queue.claim(10)
    assert job.attempts == 3
    await queue.finish([AttemptResult(job, False, 451, "4.7.1 try later", True)])
    assert db.call(q.state_counts) == {"bounced": 1}


def test_outcome_of_a_permanent_failure_is_a_bounce() -> None:
    clock = ManualClock()
    job = q.Claimed(1, "m", 1, "u@bounce.test", "bounce.test", "transactional", 0, clock.now(), b"", False)
    result = outcome(AttemptResult(job, False, 550, "5.1.1 unknown", False), clock.now(), DeliverySettings())
    assert (result.state, result.event) == ("bounced", "bounced")
    assert retry_delay([5, 10], 1) == 5 and retry_delay([5, 10], 7) == 10


@pytest.mark.parametrize("workers", [4])
def test_concurrent_claims_on_postgresql_never_overlap(pg_url: str, workers: int) -> None:
    db = Database(pg_url)
    db.migrate()
    clock = ManualClock()
    _enqueue(db, clock, 400)
    claimed: list[list[int]] = [[] for _ in range(workers)]
    start = threading.Barrier(workers)

    def work(index: int) -> None:
        start.wait()
        while jobs := db.call(q.claim, f"w{index}", *_lease(clock), 7):
            claimed[index].extend(j.delivery_id for j in jobs)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [d for part in claimed for d in part]
    assert len(everything) == len(set(everything)) == 400
    db.close()
