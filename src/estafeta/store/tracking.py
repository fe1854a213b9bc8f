"""Tracking switches per account and stream, and what a tracked open or click needs to know to be recorded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from estafeta.store.events import NewEvent, record
from estafeta.store.models import Event, Message, TrackingPreference


@dataclass(frozen=True)
class Preference:
    opens: bool
    clicks: bool


@dataclass(frozen=True)
class HitContext:
    """The tracked message's account, when it was last delivered, and recent clicks on its links."""

    account_id: int
    delivered_at: datetime | None
    recent_click_links: frozenset[int]


def preferences(conn: Connection, account_id: int) -> dict[str, Preference]:
    rows = conn.execute(select(TrackingPreference).where(TrackingPreference.account_id == account_id)).all()
    return {r.stream: Preference(r.opens, r.clicks) for r in rows}


def set_preference(
    conn: Connection, account_id: int, stream: str, opens: bool, clicks: bool, now: datetime
) -> None:
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = dialect_insert(TrackingPreference).values(
        account_id=account_id, stream=stream, opens=opens, clicks=clicks, updated_at=now
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["account_id", "stream"],
            set_={"opens": opens, "clicks": clicks, "updated_at": now},
        )
    )


def hit_context(
    conn: Connection, message_id: str, recipient: str | None, clicks_since: datetime | None
) -> HitContext | None:
    """None when the message does not exist (it may have been deleted since the token was made)."""
    account_id = conn.scalar(select(Message.account_id).where(Message.id == message_id))
    if account_id is None:
        return None
    delivered = select(Event.created_at).where(Event.message_id == message_id, Event.type == "delivered")
    if recipient is not None:
        delivered = delivered.where(Event.recipient == recipient)
    delivered_at = conn.scalar(delivered.order_by(Event.id.desc()).limit(1))
    links: frozenset[int] = frozenset()
    if clicks_since is not None:
        clicks = select(Event.data).where(
            Event.message_id == message_id, Event.type == "clicked", Event.created_at >= clicks_since
        )
        if recipient is not None:
            clicks = clicks.where(Event.recipient == recipient)
        links = frozenset(int(data.get("link", -1)) for data in conn.scalars(clicks))
    return HitContext(account_id, delivered_at, links)


def record_hit(
    conn: Connection,
    *,
    message_id: str,
    recipient: str | None,
    type: str,
    now: datetime,
    clicks_since: datetime | None,
    describe: Callable[[HitContext], dict[str, Any]],
) -> dict[str, Any] | None:
    """Log an `opened`/`clicked` event with the data `describe` makes of its context, in one transaction;
    None when the message does not exist."""
    context = hit_context(conn, message_id, recipient, clicks_since)
    if context is None:
        return None
    data = describe(context)
    record(conn, [NewEvent(context.account_id, type, data, message_id, recipient)], now)
    return data
