"""Stage 6 — outcome: what one delivery attempt means for its queue entry and for the address.

A delivered attempt ends the entry; a permanent failure bounces it and says what is suppressed
(`estafeta.suppression`); a temporary one defers it on the retry schedule until the message is too old,
when it bounces. `estafeta.queue` applies the decision and records the event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from estafeta.config import DeliverySettings
from estafeta.store import queue as q
from estafeta.store.suppressions import NewSuppression
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
        str(bounce.get("scope", "none")),
        str(bounce.get("reason", "")),
        result.reply,
        from_dns=result.code is None,
    )
    return tuple(found)


def _lasting_recipient_failure(result: AttemptResult) -> bool:
    """A final soft failure about the recipient (a disabled mailbox, a filter): it counts towards the
    soft-bounce limit like an expired message; the sender's own refusals do not."""
    bounce = result.data.get("bounce")
    return isinstance(bounce, dict) and bounce.get("kind") == "soft" and bounce.get("blame") == "recipient"


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
            soft_failure=_lasting_recipient_failure(result),
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
