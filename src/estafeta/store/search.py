"""Finding messages for people: by recipient, subject, tag, delivery state and date, newest first."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, String, cast, exists, func, select

from estafeta.store.models import Delivery, Message


@dataclass(frozen=True)
class MessageQuery:
    account_id: int
    recipient: str = ""  # part of an address
    subject: str = ""  # part of the subject
    tag: str = ""  # one whole tag
    state: str = ""  # messages with a recipient in this state
    since: datetime | None = None
    until: datetime | None = None
    before: tuple[datetime, str] | None = None  # the cursor: (created_at, id) of the last row shown


@dataclass(frozen=True)
class MessageSummary:
    id: str
    created_at: datetime
    stream: str
    source: str
    from_address: str
    subject: str
    tags: list[str]
    states: dict[str, int] = field(default_factory=dict)  # recipients per state
    recipients: list[str] = field(default_factory=list)  # the first few


def search_messages(conn: Connection, query: MessageQuery, limit: int) -> list[MessageSummary]:
    stmt = select(
        Message.id,
        Message.created_at,
        Message.stream,
        Message.source,
        Message.from_address,
        Message.subject,
        Message.tags,
    ).where(Message.account_id == query.account_id)
    if query.recipient:
        stmt = stmt.where(
            exists().where(
                Delivery.message_id == Message.id,
                func.lower(Delivery.recipient).contains(query.recipient.lower(), autoescape=True),
            )
        )
    if query.subject:
        stmt = stmt.where(func.lower(Message.subject).contains(query.subject.lower(), autoescape=True))
    if query.tag:
        # Tags are a JSON array of strings: match the quoted tag inside its text.
        quoted = '"' + query.tag.replace("\\", "\\\\").replace('"', '\\"') + '"'
        stmt = stmt.where(cast(Message.tags, String).contains(quoted, autoescape=True))
    if query.state:
        stmt = stmt.where(exists().where(Delivery.message_id == Message.id, Delivery.state == query.state))
    if query.since:
        stmt = stmt.where(Message.created_at >= query.since)
    if query.until:
        stmt = stmt.where(Message.created_at < query.until)
    if query.before:
        at, last_id = query.before
        stmt = stmt.where((Message.created_at < at) | ((Message.created_at == at) & (Message.id < last_id)))
    rows = conn.execute(stmt.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit)).all()
    ids = [r.id for r in rows]
    states: dict[str, dict[str, int]] = {}
    recipients: dict[str, list[str]] = {}
    if ids:
        for message_id, state, count in conn.execute(
            select(Delivery.message_id, Delivery.state, func.count())
            .where(Delivery.message_id.in_(ids))
            .group_by(Delivery.message_id, Delivery.state)
        ).all():
            states.setdefault(message_id, {})[state] = count
        for message_id, recipient in conn.execute(
            select(Delivery.message_id, Delivery.recipient)
            .where(Delivery.message_id.in_(ids))
            .order_by(Delivery.id)
        ).all():
            found = recipients.setdefault(message_id, [])
            if len(found) < 3:
                found.append(recipient)
    return [
        MessageSummary(
            r.id,
            r.created_at,
            r.stream,
            r.source,
            r.from_address,
            r.subject,
            r.tags or [],
            states.get(r.id, {}),
            recipients.get(r.id, []),
        )
        for r in rows
    ]
