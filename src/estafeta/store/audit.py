"""Audit log statements: append one entry, list entries newest first with filters and an id cursor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, or_, select

from estafeta.store.models import AuditEntry


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    actor: str
    account_id: int | None
    action: str
    target: str
    details: dict[str, Any]
    origin: str


@dataclass(frozen=True)
class AuditFilter:
    """Every field left None matches everything; `action` also matches the actions under it
    ("review" matches "review.approve")."""

    account_id: int | None = None
    action: str | None = None
    actor: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


def add_entry(
    conn: Connection,
    *,
    at: datetime,
    actor: str,
    action: str,
    account_id: int | None,
    target: str,
    details: dict[str, Any],
    origin: str,
) -> int:
    return conn.execute(
        insert(AuditEntry)
        .values(
            at=at,
            actor=actor,
            action=action,
            account_id=account_id,
            target=target,
            details=details,
            origin=origin,
        )
        .returning(AuditEntry.id)
    ).scalar_one()


def list_entries(
    conn: Connection, where: AuditFilter, *, before_id: int | None = None, limit: int = 100
) -> list[AuditRow]:
    """Entries newest first (ids grow with time); `before_id` is the cursor."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if where.account_id is not None:
        query = query.where(AuditEntry.account_id == where.account_id)
    if where.action is not None:
        query = query.where(
            or_(
                AuditEntry.action == where.action,
                AuditEntry.action.startswith(where.action + ".", autoescape=True),
            )
        )
    if where.actor is not None:
        query = query.where(AuditEntry.actor == where.actor)
    if where.since is not None:
        query = query.where(AuditEntry.at >= where.since)
    if where.until is not None:
        query = query.where(AuditEntry.at < where.until)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return [_row(r) for r in conn.execute(query).all()]


def _row(r: Any) -> AuditRow:
    return AuditRow(r.id, r.at, r.actor, r.account_id, r.action, r.target, r.details, r.origin)
