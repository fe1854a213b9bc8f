"""Stage 4 — queue: one worker's leases on the shared outbound queue, and writing attempts' outcomes back.

SQL lives in `estafeta.store.queue`; what an attempt means (delivered, deferred until when, bounced, what is
suppressed) is decided in `estafeta.outcome`. A worker only reports for entries whose lease it still
holds, and whoever must react to final outcomes (reputation) is given at construction and runs in the
outcomes' transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timedelta

from sqlalchemy import Connection

from estafeta.clock import Clock
from estafeta.config import DeliverySettings
from estafeta.outcome import AttemptResult, Job, outcome
from estafeta.store import abuse as abuse_store
from estafeta.store import queue as q
from estafeta.store.db import Database
from estafeta.store.suppressions import SoftRule

# Terminations are re-read this far back, so that one committed late (with an earlier time) is not missed.
TERMINATION_OVERLAP = timedelta(minutes=5)

AfterFinish = Callable[[Connection, list[tuple[int, bool]], datetime], None]
"""Runs in the outcomes' transaction with (account, delivered) of each final (not deferred) outcome."""


class Queue:
    """One worker's handle on the shared queue."""

    def __init__(
        self,
        db: Database,
        settings: DeliverySettings,
        clock: Clock,
        owner: str,
        soft_rule: SoftRule | None = None,
        after_finish: AfterFinish | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.owner = owner
        self.soft_rule = soft_rule
        self.after_finish = after_finish
        self.terminated: set[int] = set()  # accounts whose mail is never sent (`estafeta.termination`)
        self._terminations_seen: datetime | None = None

    def _lease_until(self) -> datetime:
        return self.clock.now() + timedelta(seconds=self.settings.lease_seconds)

    async def claim(self, limit: int, skip_domains: Collection[str] = ()) -> list[Job]:
        """Lease due entries; terminations are read again in the same transaction (`terminated`)."""

        def work(conn: Connection) -> list[Job]:
            self._read_terminations(conn)
            return q.claim(conn, self.owner, self.clock.now(), self._lease_until(), limit, skip_domains)

        return await self.db.run(work)

    async def read_terminations(self) -> None:
        """Bring `terminated` up to date without claiming (when the worker has no room for more)."""
        await self.db.run(self._read_terminations)

    def _read_terminations(self, conn: Connection) -> None:
        """Add the accounts terminated since the last look (all of them at the first) to `terminated`."""
        since = self._terminations_seen
        found, latest = abuse_store.terminated_since(conn, since - TERMINATION_OVERLAP if since else None)
        self._terminations_seen = max(latest, since) if latest and since else latest or since
        self.terminated |= found

    async def finish(self, results: list[AttemptResult]) -> int:
        now = self.clock.now()
        outcomes = [outcome(r, now, self.settings) for r in results]
        after = self.after_finish
        if after is None:
            return await self.db.run(q.finish, self.owner, now, outcomes, self.soft_rule)
        final = [
            (r.job.account_id, r.delivered)
            for r, f in zip(results, outcomes, strict=True)
            if f.state != "deferred"
        ]

        def finish_and_review(conn: Connection) -> int:
            applied = q.finish(conn, self.owner, now, outcomes, self.soft_rule)
            after(conn, final, now)
            return applied

        return await self.db.run(finish_and_review)

    async def renew(self, delivery_ids: list[int]) -> int:
        return await self.db.run(q.renew, self.owner, delivery_ids, self._lease_until())

    async def release(self, delivery_ids: list[int]) -> int:
        return await self.db.run(q.release, self.owner, delivery_ids)
