"""Periodic platform jobs (reputation reviews, notices, retention, reports): each runs once a round
(`scheduler.interval` seconds) across every node of the platform.

Every node runs a scheduler; for each job and round, the first node to take the round in the database
(`store.jobs.take_round`, one conditional update) runs it, and the others skip it. On PostgreSQL a node
also holds an advisory lock on the job while it runs (on a connection of its own, so the lock goes with
the node if it dies), so a job that outlasts its round never runs twice at once. On SQLite the platform is
one node, and the same round keeps its processes from repeating a job.

Jobs are plain coroutines that do one round of work, so tests call them directly with a manual clock.
A job that fails is logged and tried again on the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg

from estafeta.clock import Clock
from estafeta.store import jobs as store
from estafeta.store.db import Database

log = logging.getLogger("estafeta.scheduler")

Job = Callable[[], Awaitable[object]]

_LOCK = "SELECT pg_try_advisory_lock(hashtext(current_schema()), hashtext(%s))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtext(current_schema()), hashtext(%s))"


class Scheduler:
    def __init__(
        self, jobs: dict[str, Job], db: Database, clock: Clock, owner: str, interval: float = 60.0
    ) -> None:
        self.jobs = jobs
        self.db = db
        self.clock = clock
        self.owner = owner
        self.interval = interval
        self._locks: psycopg.AsyncConnection[object] | None = None

    def _round(self) -> int:
        return int(self.clock.now().timestamp() // self.interval)

    @contextlib.asynccontextmanager
    async def _exclusive(self, name: str) -> AsyncIterator[bool]:
        """Whether this node may run `name` now: no other node runs it (PostgreSQL advisory lock)."""
        if self.db.libpq_url is None:
            yield True
            return
        if self._locks is None or self._locks.closed:
            self._locks = await psycopg.AsyncConnection.connect(self.db.libpq_url, autocommit=True)
        locks = self._locks
        got = await (await locks.execute(_LOCK, (name,))).fetchone()
        if not got or not got[0]:
            yield False
            return
        try:
            yield True
        finally:
            with contextlib.suppress(psycopg.Error):
                await locks.execute(_UNLOCK, (name,))

    async def run_once(self) -> None:
        round_no = self._round()
        for name, job in self.jobs.items():
            try:
                async with self._exclusive(name) as alone:
                    if not alone or not await self.db.run(store.take_round, name, round_no):
                        continue
                    log.info("scheduled job %s runs round %d on %s", name, round_no, self.owner)
                    await job()
            except psycopg.Error:
                log.exception("scheduled job %s skipped: its lock could not be taken", name)
                if self._locks is not None:
                    await self._locks.close()
                    self._locks = None
            except Exception:
                log.exception("scheduled job %s failed", name)

    async def run(self) -> None:
        """Run every job each round until cancelled."""
        try:
            while True:
                await self.run_once()
                await asyncio.sleep(self.interval - self.clock.now().timestamp() % self.interval)
        finally:
            if self._locks is not None:
                await self._locks.close()
