"""The outbound queue's policy: leases, the retry schedule, and turning attempt results into outcomes.

SQL lives in `estafeta.store.queue`; this module decides *what* to write: when a deferred entry is
tried again, when it has been deferred for too long and becomes a bounce, and that a worker only
reports for entries whose lease it still holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from estafeta.clock import Clock
from estafeta.config import DeliverySettings
from estafeta.store import queue as q
from estafeta.store.db import Database

Job = q.Claimed


@dataclass(frozen=True)
class AttemptResult:
    """What one SMTP attempt for one entry produced."""

    job: Job
    delivered: bool
    code: int | None
    reply: str
    retry: bool  # only read when not delivered: may a later attempt succeed?
    data: dict[str, Any] = field(default_factory=dict)
    counts_as_attempt: bool = True


def retry_delay(schedule: list[float], attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt (1-based); the last step repeats."""
    return schedule[min(attempts, len(schedule)) - 1]


def outcome(result: AttemptResult, now: datetime, settings: DeliverySettings) -> q.Finish:
    """Decide the entry's next state from an attempt's result."""
    job = result.job
    data = {"code": result.code, "reply": result.reply, **result.data}
    if result.delivered:
        return q.Finish(job.delivery_id, "delivered", now, result.code, result.reply, "delivered", data)
    if not result.retry:
        return q.Finish(job.delivery_id, "bounced", now, result.code, result.reply, "bounced", data)
    attempts = job.attempts + (1 if result.counts_as_attempt else 0)
    expires = job.created_at + timedelta(seconds=settings.max_age)
    if now >= expires:
        data["expired"] = True
        return q.Finish(job.delivery_id, "bounced", now, result.code, result.reply, "bounced", data)
    next_at = min(now + timedelta(seconds=retry_delay(settings.retry_schedule, max(attempts, 1))), expires)
    data["next_attempt_at"] = next_at.isoformat()
    return q.Finish(
        job.delivery_id,
        "deferred",
        next_at,
        result.code,
        result.reply,
        "deferred",
        data,
        counts_as_attempt=result.counts_as_attempt,
    )


class Queue:
    """One worker's handle on the shared queue."""

    def __init__(self, db: Database, settings: DeliverySettings, clock: Clock, owner: str) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.owner = owner

    def _lease_until(self) -> datetime:
        return self.clock.now() + timedelta(seconds=self.settings.lease_seconds)

    async def claim(self, limit: int) -> list[Job]:
        return await self.db.run(q.claim, self.owner, self.clock.now(), self._lease_until(), limit)

    async def finish(self, results: list[AttemptResult]) -> int:
        now = self.clock.now()
        return await self.db.run(q.finish, self.owner, now, [outcome(r, now, self.settings) for r in results])

    async def renew(self, delivery_ids: list[int]) -> int:
        return await self.db.run(q.renew, self.owner, delivery_ids, self._lease_until())

    async def release(self, delivery_ids: list[int]) -> int:
        return await self.db.run(q.release, self.owner, delivery_ids)
