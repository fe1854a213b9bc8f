"""The event log: every state change of a message or an account is one row, and `record` writes them all.

Stats, reputation, webhooks and notices read this table; nothing else inserts into it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from estafeta.store import driver
from estafeta.store.models import Event


@dataclass(frozen=True)
class NewEvent:
    """One event to record; account-level events (reputation, reviews, limits) have no message."""

    account_id: int
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    recipient: str | None = None
    delivery_id: int | None = None


@dataclass(frozen=True)
class EventRow:
    id: int
    account_id: int
    message_id: str | None
    recipient: str | None
    type: str
    created_at: datetime
    data: dict[str, Any]


# PostgreSQL: one statement for the whole list (an executemany runs one INSERT per row), ids in list order.
# The accept transaction runs it as the last part of its one insert statement (`estafeta.store.messages`).
INSERT_POSTGRESQL = """
INSERT INTO events (account_id, message_id, delivery_id, recipient, type, created_at, data)
SELECT e.account_id, e.message_id, e.delivery_id, e.recipient, e.type, %(now)s, e.data
FROM unnest(
    CAST(%(e_accounts)s AS bigint[]), CAST(%(e_messages)s AS text[]), CAST(%(e_deliveries)s AS bigint[]),
    CAST(%(e_recipients)s AS text[]), CAST(%(e_types)s AS text[]), CAST(%(e_data)s AS json[])
) WITH ORDINALITY AS e(account_id, message_id, delivery_id, recipient, type, data, n)
ORDER BY e.n
"""


# SQLite: run by the driver, one parameter tuple per row (`sqlite_rows`), ids in list order; SQLAlchemy's
# execution cost more CPU than SQLite spends on the rows, in transactions that hold the one write lock.
INSERT_SQLITE = (
    "INSERT INTO events (account_id, message_id, delivery_id, recipient, type, created_at, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def record(conn: Connection, events: Iterable[NewEvent], now: datetime) -> int:
    """Append events, all at `now`, in the caller's transaction; returns how many were written."""
    if conn.dialect.name == "postgresql":
        return _record_postgresql(conn, list(events), now)
    rows = sqlite_rows(events, now)
    if rows:
        driver.sqlite_many(conn, INSERT_SQLITE, rows)
    return len(rows)


def sqlite_rows(events: Iterable[NewEvent], now: datetime) -> list[tuple[Any, ...]]:
    """The parameters of `INSERT_SQLITE` for these events, bound as SQLAlchemy binds the columns (times as
    `driver.sqlite_time`, `data` as `driver.json_text`)."""
    at = driver.sqlite_time(now)
    dumps = driver.json_text
    return [
        (e.account_id, e.message_id, e.delivery_id, e.recipient, e.type, at, dumps(e.data)) for e in events
    ]


def postgresql_params(events: list[NewEvent], now: datetime) -> dict[str, Any]:
    """The parameters of `INSERT_POSTGRESQL` for these events."""
    return {
        "e_accounts": [e.account_id for e in events],
        "e_messages": [e.message_id for e in events],
        "e_deliveries": [e.delivery_id for e in events],
        "e_recipients": [e.recipient for e in events],
        "e_types": [e.type for e in events],
        "e_data": [json.dumps(e.data) for e in events],
        "now": now,
    }


def _record_postgresql(conn: Connection, events: list[NewEvent], now: datetime) -> int:
    if events:
        with driver.cursor(conn) as cursor:
            cursor.execute(INSERT_POSTGRESQL, postgresql_params(events, now))
    return len(events)


def event_row(row: Any) -> EventRow:
    return EventRow(row.id, row.account_id, row.message_id, row.recipient, row.type, row.created_at, row.data)


def for_message(conn: Connection, message_id: str) -> list[EventRow]:
    """A message's history, oldest first."""
    query = select(Event).where(Event.message_id == message_id).order_by(Event.id)
    return [event_row(e) for e in conn.execute(query).all()]


@dataclass(frozen=True)
class EventFilter:
    account_id: int
    types: list[str] = field(default_factory=list)
    message_id: str | None = None
    recipient: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_id: int | None = None


def list_events(conn: Connection, flt: EventFilter, limit: int) -> list[EventRow]:
    """Events oldest first, filtered; `after_id` is the cursor (ids only grow)."""
    query = select(Event).where(Event.account_id == flt.account_id)
    if flt.types:
        query = query.where(Event.type.in_(flt.types))
    if flt.message_id:
        query = query.where(Event.message_id == flt.message_id)
    if flt.recipient:
        query = query.where(Event.recipient == flt.recipient)
    if flt.since:
        query = query.where(Event.created_at >= flt.since)
    if flt.until:
        query = query.where(Event.created_at < flt.until)
    if flt.after_id is not None:
        query = query.where(Event.id > flt.after_id)
    return [event_row(r) for r in conn.execute(query.order_by(Event.id).limit(limit)).all()]
