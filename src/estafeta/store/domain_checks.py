"""Sending-domain verification states (`domain_checks`): one row per checked domain; no row means pending."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from estafeta.store.accounts import DomainRow, _domains
from estafeta.store.models import Domain, DomainCheck


@dataclass(frozen=True)
class CheckRow:
    domain_id: int
    state: str
    changed_at: datetime
    checked_at: datetime | None
    failing_since: datetime | None
    report: dict[str, Any]


def _row(row: Any) -> CheckRow:
    return CheckRow(row.domain_id, row.state, row.changed_at, row.checked_at, row.failing_since, row.report)


def get(conn: Connection, domain_id: int, *, lock: bool = False) -> CheckRow | None:
    query = select(DomainCheck).where(DomainCheck.domain_id == domain_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    return _row(row) if row else None


def by_name(conn: Connection, name: str) -> tuple[DomainRow, CheckRow | None] | None:
    """A registered domain and its state (None when it was never checked)."""
    row = conn.execute(
        select(
            Domain,
            DomainCheck.domain_id,
            DomainCheck.state,
            DomainCheck.changed_at,
            DomainCheck.checked_at,
            DomainCheck.failing_since,
            DomainCheck.report,
        )
        .outerjoin(DomainCheck, DomainCheck.domain_id == Domain.id)
        .where(Domain.name == name)
    ).first()
    if row is None:
        return None
    return _domains(conn, [row])[0], (_row(row) if row.domain_id is not None else None)


def save(conn: Connection, check: CheckRow) -> None:
    values = {
        "state": check.state,
        "changed_at": check.changed_at,
        "checked_at": check.checked_at,
        "failing_since": check.failing_since,
        "report": check.report,
    }
    done = conn.execute(
        update(DomainCheck).where(DomainCheck.domain_id == check.domain_id).values(**values)
    ).rowcount
    if not done:
        try:
            with conn.begin_nested():
                conn.execute(insert(DomainCheck).values(domain_id=check.domain_id, **values))
        except IntegrityError:  # another process saved it first: ours is the newer check
            conn.execute(update(DomainCheck).where(DomainCheck.domain_id == check.domain_id).values(**values))


def due(conn: Connection, checked_before: datetime, limit: int) -> list[DomainRow]:
    """Domains never checked or last checked at or before `checked_before`, least recently checked first."""
    rows = conn.execute(
        select(Domain)
        .outerjoin(DomainCheck, DomainCheck.domain_id == Domain.id)
        .where(or_(DomainCheck.checked_at.is_(None), DomainCheck.checked_at <= checked_before))
        .order_by(DomainCheck.checked_at.is_not(None), DomainCheck.checked_at, Domain.id)
        .limit(limit)
    ).all()
    return _domains(conn, list(rows))
