"""The scheduler: each round of a job runs on one node however many run schedulers on the database, and
(PostgreSQL) a job still running is not started again by another node."""

from __future__ import annotations

import asyncio

from estafeta.clock import ManualClock
from estafeta.scheduler import Scheduler
from estafeta.store.db import Database


async def test_each_round_runs_once_across_nodes(db_url: str) -> None:
    clock = ManualClock()
    runs: list[str] = []
    nodes = [Database(db_url) for _ in range(3)]
    nodes[0].migrate()

    def job(node: str) -> Scheduler:
        async def count() -> None:
            runs.append(node)

        return Scheduler({"count": count}, nodes[int(node)], clock, node, 60)

    schedulers = [job(str(n)) for n in range(3)]
    try:
        for round_no in range(3):
            await asyncio.gather(*(s.run_once() for s in schedulers))
            assert len(runs) == round_no + 1
            await asyncio.gather(*(s.run_once() for s in schedulers))  # the same round again: nothing
            assert len(runs) == round_no + 1
            clock.advance(60)
    finally:
        for s in schedulers:
            if s._locks is not None:
                await s._locks.close()
        for database in nodes:
            database.close()


async def test_a_job_still_running_elsewhere_is_not_started_again(pg_url: str) -> None:
    clock = ManualClock()
    first_db, second_db = Database(pg_url), Database(pg_url)
    first_db.migrate()
    release = asyncio.Event()
    started: list[str] = []

    async def slow() -> None:
        started.append("slow")
        await release.wait()

    first = Scheduler({"slow": slow}, first_db, clock, "first", 60)
    second = Scheduler({"slow": slow}, second_db, clock, "second", 60)
    try:
        running = asyncio.create_task(first.run_once())
        while not started:
            await asyncio.sleep(0.01)
        clock.advance(60)  # a new round while the job still runs on the first node
        await second.run_once()
        assert started == ["slow"]
        release.set()
        await running
        await second.run_once()  # once it ended, the round is free to take
        assert started == ["slow", "slow"]
    finally:
        for s in (first, second):
            if s._locks is not None:
                await s._locks.close()
        first_db.close()
        second_db.close()
