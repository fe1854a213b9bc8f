"""Platform-wide delivery figures for operators: outcomes per recipient domain, and the queue's depth."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from estafeta.store.models import Delivery, Event

OUTCOMES = ("delivered", "deferred", "bounced")


@dataclass(frozen=True)
class DomainOutcome:
    domain: str
    type: str  # delivered | deferred | bounced
    bounce_kind: str | None
    bounce_reason: str | None
    mx: str | None
    count: int


def _domain(column: object, conn: Connection) -> object:
    if conn.dialect.name == "postgresql":
        return func.lower(func.split_part(column, "@", 2))
    return func.lower(func.substr(column, func.instr(column, "@") + 1))


def outcomes_by_domain(conn: Connection, since: datetime, until: datetime) -> list[DomainOutcome]:
    """Delivery attempts' outcomes of every account in [since, until), per recipient domain."""
    domain = _domain(Event.recipient, conn).label("domain")  # type: ignore[attr-defined]
    kind = Event.data["bounce"]["kind"].as_string().label("kind")
    reason = Event.data["bounce"]["reason"].as_string().label("reason")
    mx = func.max(Event.data["mx"].as_string()).label("mx")
    query = (
        select(domain, Event.type, kind, reason, mx, func.count().label("count"))
        .where(Event.type.in_(OUTCOMES), Event.created_at >= since, Event.created_at < until)
        .group_by(domain, Event.type, kind, reason)
    )
    return [
        DomainOutcome(r.domain or "", r.type, r.kind, r.reason, r.mx, r.count)
        for r in conn.execute(query).all()
    ]


def queue_depth(conn: Connection, now: datetime) -> dict[str, int]:
    """Queue entries waiting (queued, deferred, held), and how many of them are due now."""
    found = dict(
        conn.execute(
            select(Delivery.state, func.count())
            .where(Delivery.state.in_(("queued", "deferred", "held")))
            .group_by(Delivery.state)
        ).all()
    )
    due = conn.scalar(
        select(func.count()).where(
            Delivery.state.in_(("queued", "deferred")), Delivery.next_attempt_at <= now
        )
    )
    return {
        "queued": found.get("queued", 0),
        "deferred": found.get("deferred", 0),
        "held": found.get("held", 0),
        "due": int(due or 0),
    }


def waiting_by_domain(conn: Connection, limit: int = 20) -> list[tuple[str, int]]:
    """Recipient domains with the most entries waiting (queued or deferred)."""
    query = (
        select(Delivery.domain, func.count().label("n"))
        .where(Delivery.state.in_(("queued", "deferred")))
        .group_by(Delivery.domain)
        .order_by(func.count().desc())
        .limit(limit)
    )
    return [(d, n) for d, n in conn.execute(query).all()]
