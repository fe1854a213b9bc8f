"""The outbound queue's policy: leases, the retry schedule, and turning attempt results into outcomes.

SQL lives in `estafeta.store.queue`; this module decides *what* to write: when a deferred entry is
tried again, when it has been deferred for too long and becomes a bounce, what a final failure means
for the address (`estafeta.suppression`), and that a worker only reports for entries whose lease it
still holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from estafeta.clock import Clock
from estafeta.config import DeliverySettings
from estafeta.store import queue as q
from estafeta.store.db import Database
from estafeta.store.suppressions import NewSuppression, SoftRule
from estafeta.suppression import for_bounce

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


def _suppressions(result: AttemptResult) -> tuple[NewSuppression, ...]:
    """What a final failure means for the address; no reply code at all means our own DNS found it."""
    bounce = result.data.get("bounce")
    if not isinstance(bounce, dict):
        return ()
    job = result.job
    found = for_bounce(
        job.account_id,
        job.recipient,
        bounce["kind"],
        bounce["reason"],
        result.reply,
        from_dns=result.code is None,
    )
    return tuple(found)


def outcome(result: AttemptResult, now: datetime, settings: DeliverySettings) -> q.Finish:
    """Decide the entry's next state from an attempt's result."""
    job = result.job
    data = {"code": result.code, "reply": result.reply, **result.data}
    if result.delivered:
        return q.Finish(job.delivery_id, "delivered", now, result.code, result.reply, "delivered", data)
    if not result.retry:
        return q.Finish(
            job.delivery_id,
            "bounced",
            now,
            result.code,
            result.reply,
            "bounced",
            data,
            suppress=_suppressions(result),
        )
    attempts = job.attempts + (1 if result.counts_as_attempt else 0)
    expires = job.created_at + timedelta(seconds=settings.max_age)
    if now >= expires:
        data["expired"] = True
        return q.Finish(
            job.delivery_id, "bounced", now, result.code, result.reply, "bounced", data, soft_failure=True
        )
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

    def __init__(
        self,
        db: Database,
        settings: DeliverySettings,
        clock: Clock,
        owner: str,
        soft_rule: SoftRule | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.owner = owner
        self.soft_rule = soft_rule
        # Called in the outcomes' transaction with the account of each final outcome (reputation).
        self.after_finish: Callable[[Connection, list[int], datetime], None] | None = None

    def _lease_until(self) -> datetime:
        return self.clock.now() + timedelta(seconds=self.settings.lease_seconds)

    async def claim(self, limit: int) -> list[Job]:
        return await self.db.run(q.claim, self.owner, self.clock.now(), self._lease_until(), limit)

    async def finish(self, results: list[AttemptResult]) -> int:
        now = self.clock.now()
        outcomes = [outcome(r, now, self.settings) for r in results]
        after = self.after_finish
        if after is None:
            return await self.db.run(q.finish, self.owner, now, outcomes, self.soft_rule)
        final = [r.job.account_id for r, f in zip(results, outcomes, strict=True) if f.state != "deferred"]

        def finish_and_review(conn: Connection) -> int:
            applied = q.finish(conn, self.owner, now, outcomes, self.soft_rule)
            after(conn, final, now)
            return applied

        return await self.db.run(finish_and_review)

    async def renew(self, delivery_ids: list[int]) -> int:
        return await self.db.run(q.renew, self.owner, delivery_ids, self._lease_until())

    async def release(self, delivery_ids: list[int]) -> int:
        return await self.db.run(q.release, self.owner, delivery_ids)
