"""Suppression lists (per account and global), their audit trail, and the failure count behind the
persistent-soft-bounce rule.

Values are compared through `value_key`, the lower-cased value, so `Ana@Example.com` and
`ana@example.com` are one entry. Adding is idempotent per scope (`INSERT … ON CONFLICT DO NOTHING`), so
concurrent bounces for one address never fail each other's transactions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, distinct, func, insert, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite

from estafeta.store.driver import read_time, sqlite_query
from estafeta.store.models import FAILURE_EVENTS, Event, Suppression, SuppressionAudit


@dataclass(frozen=True)
class NewSuppression:
    account_id: int | None  # None: the global list
    kind: str  # address | domain
    value: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class SuppressionRow:
    id: int
    account_id: int | None
    kind: str
    value: str
    reason: str
    detail: str
    created_at: datetime

    @property
    def scope(self) -> str:
        return "global" if self.account_id is None else "account"


@dataclass(frozen=True)
class AuditRow:
    id: int
    account_id: int | None
    value: str
    action: str
    reason: str
    actor: str
    note: str
    at: datetime


@dataclass(frozen=True)
class SoftRule:
    """Suppress an address once `limit` distinct messages to it failed softly for good within `window`."""

    limit: int
    window: timedelta


def _row(row: Any) -> SuppressionRow:
    return SuppressionRow(row.id, row.account_id, row.kind, row.value, row.reason, row.detail, row.created_at)


def _scope(account_id: int | None) -> Any:
    return Suppression.account_id.is_(None) if account_id is None else Suppression.account_id == account_id


def _audit(
    conn: Connection,
    account_id: int | None,
    value: str,
    action: str,
    reason: str,
    actor: str,
    note: str,
    now: datetime,
) -> None:
    conn.execute(
        insert(SuppressionAudit).values(
            account_id=account_id, value=value, action=action, reason=reason, actor=actor, note=note, at=now
        )
    )


def add(
    conn: Connection, entry: NewSuppression, *, actor: str, now: datetime, note: str = ""
) -> SuppressionRow | None:
    """Add an entry and its audit row; None (and no audit row) when the scope lists the value already."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = dialect_insert(Suppression).values(
        account_id=entry.account_id,
        kind=entry.kind,
        value=entry.value,
        value_key=entry.value.lower(),
        reason=entry.reason,
        detail=entry.detail[:2000],
        created_at=now,
    )
    if entry.account_id is None:
        statement = statement.on_conflict_do_nothing(
            index_elements=["value_key"], index_where=Suppression.account_id.is_(None)
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=["account_id", "value_key"])
    new_id = conn.execute(statement.returning(Suppression.id)).scalar()
    if new_id is None:
        return None
    _audit(conn, entry.account_id, entry.value, "add", entry.reason, actor, note, now)
    return SuppressionRow(new_id, entry.account_id, entry.kind, entry.value, entry.reason, entry.detail, now)


def remove(
    conn: Connection, account_id: int | None, value: str, *, actor: str, now: datetime, note: str = ""
) -> SuppressionRow | None:
    """Remove the scope's entry for `value` (any case) and audit it; None when there was none."""
    row = conn.execute(
        delete(Suppression)
        .where(_scope(account_id), Suppression.value_key == value.lower())
        .returning(*Suppression.__table__.columns)
    ).first()
    if row is None:
        return None
    removed = _row(row)
    _audit(conn, account_id, removed.value, "remove", removed.reason, actor, note, now)
    return removed


# The policy gate's query on every accepted message: built once (building it cost more than running it).
_MATCHING = select(Suppression).where(
    Suppression.value_key.in_(bindparam("keys", expanding=True)),
    or_(Suppression.account_id == bindparam("account_id"), Suppression.account_id.is_(None)),
)


# SQLite: the same query run by the driver, for as many keys as there are `?` (SQLAlchemy's execution costs
# more CPU than SQLite spends on it, while the storing transaction holds the one write lock).
_MATCHING_SQLITE = (
    "SELECT id, account_id, kind, value, reason, detail, created_at FROM suppressions "
    "WHERE (account_id = ? OR account_id IS NULL) AND value_key IN ({})"
)


def matching(conn: Connection, account_id: int, keys: Iterable[str]) -> list[SuppressionRow]:
    """Entries of the account or the global list whose value is one of `keys` (lower-case), one query."""
    wanted = sorted(set(keys))
    if not wanted:
        return []
    if conn.dialect.name == "sqlite":
        query = _MATCHING_SQLITE.format(", ".join("?" * len(wanted)))
        found = sqlite_query(conn, query, (account_id, *wanted))
        return [SuppressionRow(*row[:6], read_time(row[6])) for row in found]
    rows = conn.execute(_MATCHING, {"keys": wanted, "account_id": account_id}).all()
    return [_row(r) for r in rows]


def get(conn: Connection, account_id: int | None, value: str) -> SuppressionRow | None:
    row = conn.execute(
        select(Suppression).where(_scope(account_id), Suppression.value_key == value.lower())
    ).first()
    return _row(row) if row else None


def list_entries(
    conn: Connection,
    account_id: int | None,
    *,
    search: str | None = None,
    reason: str | None = None,
    after_id: int | None = None,
    limit: int | None = None,
) -> list[SuppressionRow]:
    """One scope's entries, oldest first; `search` matches part of the value, `after_id` is the cursor."""
    query = select(Suppression).where(_scope(account_id))
    if search:
        query = query.where(Suppression.value_key.contains(search.lower(), autoescape=True))
    if reason:
        query = query.where(Suppression.reason == reason)
    if after_id is not None:
        query = query.where(Suppression.id > after_id)
    query = query.order_by(Suppression.id)
    if limit is not None:
        query = query.limit(limit)
    return [_row(r) for r in conn.execute(query).all()]


def audit_trail(conn: Connection, account_id: int | None, value: str | None = None) -> list[AuditRow]:
    """The scope's audit rows, oldest first, for one value (any case) or all."""
    query = select(SuppressionAudit).where(
        SuppressionAudit.account_id.is_(None)
        if account_id is None
        else SuppressionAudit.account_id == account_id
    )
    if value is not None:
        query = query.where(func.lower(SuppressionAudit.value) == value.lower())
    return [
        AuditRow(r.id, r.account_id, r.value, r.action, r.reason, r.actor, r.note, r.at)
        for r in conn.execute(query.order_by(SuppressionAudit.id)).all()
    ]


def recent_audit(conn: Connection, account_id: int | None, limit: int) -> list[AuditRow]:
    """The scope's latest audit rows, newest first."""
    query = select(SuppressionAudit).where(
        SuppressionAudit.account_id.is_(None)
        if account_id is None
        else SuppressionAudit.account_id == account_id
    )
    return [
        AuditRow(r.id, r.account_id, r.value, r.action, r.reason, r.actor, r.note, r.at)
        for r in conn.execute(query.order_by(SuppressionAudit.id.desc()).limit(limit)).all()
    ]


def failed_messages(conn: Connection, account_id: int, recipient: str, since: datetime) -> int:
    """Distinct messages to `recipient` that failed softly for good since `since`: bounced after expiring,
    or reported by a soft asynchronous bounce (`soft_bounced`)."""
    query = select(func.count(distinct(Event.message_id))).where(
        Event.account_id == account_id,
        Event.recipient == recipient,
        text(FAILURE_EVENTS),  # literally the partial index's predicate, so the planner may use it
        Event.created_at >= since,
        or_(
            Event.type == "soft_bounced",
            and_(Event.type == "bounced", Event.data["expired"].as_boolean().is_(True)),
        ),
    )
    return int(conn.scalar(query) or 0)


def after_failure(
    conn: Connection,
    *,
    account_id: int,
    recipient: str,
    message_id: str,
    entries: Iterable[NewSuppression],
    soft_failure: bool,
    rule: SoftRule | None,
    now: datetime,
) -> list[SuppressionRow]:
    """Apply what a failure means for the address, in the transaction that records the failure.

    `entries` are added outright (hard bounce, complaint); a soft failure adds an account entry once the
    rule's count is reached. Returns the entries that are new.
    """
    note = f"message {message_id}"
    added = [row for e in entries if (row := add(conn, e, actor="system", now=now, note=note)) is not None]
    if soft_failure and rule is not None:
        count = failed_messages(conn, account_id, recipient, now - rule.window)
        if count >= rule.limit:
            days = rule.window / timedelta(days=1)
            detail = f"{count} messages failed softly within {days:g} days"
            entry = NewSuppression(account_id, "address", recipient, "soft-bounce-persistent", detail)
            row = add(conn, entry, actor="system", now=now, note=note)
            if row is not None:
                added.append(row)
    return added
