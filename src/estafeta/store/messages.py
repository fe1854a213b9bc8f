"""Accepted messages and their recipients' queue entries."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from estafeta.store import driver, suppressions
from estafeta.store import events as events_store
from estafeta.store.events import EventRow, NewEvent, for_message
from estafeta.store.models import Delivery, Message


@dataclass(frozen=True)
class Suppressed:
    """A recipient the policy gate dropped: `scope` is where the entry is (account | global); `trap` marks
    a spam-trap hit."""

    recipient: str
    reason: str
    scope: str
    trap: bool = False


@dataclass(frozen=True)
class NewMessage:
    """A composed, signed message ready to be stored with one queue entry per recipient.

    `recipients` are queued; `suppressed` ones get an entry in state `suppressed` and are never sent.
    """

    id: str
    account_id: int
    stream: str
    source: str
    from_address: str
    subject: str
    message_id_header: str
    raw: bytes
    smtputf8: bool
    recipients: list[str]
    dkim_keys: str = ""  # the keys that signed it (`Message.dkim_keys`)
    tags: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    suppressed: list[Suppressed] = field(default_factory=list)
    lint: list[dict[str, str]] = field(default_factory=list)  # compliance findings, kept on `accepted`
    held: list[str] = field(default_factory=list)  # why it waits for an administrator (link checks)


@dataclass(frozen=True)
class RecipientState:
    recipient: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_code: int | None
    last_reply: str | None


@dataclass(frozen=True)
class MessageView:
    id: str
    account_id: int
    stream: str
    source: str
    from_address: str
    subject: str
    message_id_header: str
    size: int
    tags: list[str]
    meta: dict[str, Any]
    created_at: datetime
    recipients: list[RecipientState]
    events: list[EventRow]


Entry = tuple[str, int, str, str, str, str]
"""A queue entry to insert: message id, account, recipient, domain, stream, state."""

StoreHook = Callable[[Connection], None]
"""Store work committed with the messages, in their transaction (e.g. a campaign's progress cursor)."""


def insert_messages(
    conn: Connection, messages: list[NewMessage], now: datetime, hooks: Sequence[StoreHook] = ()
) -> None:
    """Store messages, queue every recipient, log `accepted` + `queued`; all in the caller's transaction.

    A held message's recipients wait in state `held` (event `held`) until an administrator releases them.
    Suppressed recipients are logged as `suppressed` instead; a spam-trap hit is also logged as `trap_hit`
    and puts the address on the global list. `hooks` run last, in the same transaction.
    """
    if not messages:
        return
    # Queued (or held) recipients first, then the suppressed ones: their entries' ids follow this order.
    deliveries = [
        (m.id, m.account_id, rcpt, rcpt.rsplit("@", 1)[1].lower(), m.stream, "held" if m.held else "queued")
        for m in messages
        for rcpt in m.recipients
    ]
    deliveries.extend(
        (m.id, m.account_id, d.recipient, d.recipient.rsplit("@", 1)[1].lower(), m.stream, "suppressed")
        for m in messages
        for d in m.suppressed
    )
    events: list[NewEvent] = []
    for m in messages:
        data = {"source": m.source, "stream": m.stream, "recipients": len(m.recipients) + len(m.suppressed)}
        events.append(
            NewEvent(m.account_id, "accepted", {**data, **({"lint": m.lint} if m.lint else {})}, m.id)
        )
        for dropped in m.suppressed:
            events.extend(_suppressed_events(conn, m, dropped, now))
        events.extend(
            NewEvent(
                m.account_id,
                "held" if m.held else "queued",
                {"reasons": m.held} if m.held else {},
                m.id,
                rcpt,
            )
            for rcpt in m.recipients
        )
    if conn.dialect.name == "postgresql":
        _insert_postgresql(conn, messages, deliveries, events, now)
    else:
        _insert_sqlite(conn, messages, deliveries, events, now)
    for hook in hooks:
        hook(conn)


# PostgreSQL: the messages, their queue entries and their events in one statement (one round trip, one
# execution, where an executemany runs one INSERT per row), the entries' and events' ids in the order given.
_INSERT_POSTGRESQL = (
    """
WITH stored AS (
    INSERT INTO messages (id, account_id, stream, source, from_address, subject, message_id_header, raw, size,
        smtputf8, tags, metadata, dkim_keys, created_at)
    SELECT m.*, %(now)s FROM unnest(
        CAST(%(ids)s AS text[]), CAST(%(accounts)s AS bigint[]), CAST(%(streams)s AS text[]),
        CAST(%(sources)s AS text[]), CAST(%(froms)s AS text[]), CAST(%(subjects)s AS text[]),
        CAST(%(headers)s AS text[]), CAST(%(raws)b AS bytea[]), CAST(%(sizes)s AS integer[]),
        CAST(%(utf8)s AS boolean[]), CAST(%(tags)s AS json[]), CAST(%(metas)s AS json[]),
        CAST(%(keys)s AS text[])
    ) AS m
), queued AS (
    INSERT INTO deliveries (message_id, account_id, recipient, domain, stream, state, attempts,
        next_attempt_at, created_at, updated_at)
    SELECT d.message_id, d.account_id, d.recipient, d.domain, d.stream, d.state, 0, %(now)s, %(now)s, %(now)s
    FROM unnest(
        CAST(%(d_messages)s AS text[]), CAST(%(d_accounts)s AS bigint[]), CAST(%(d_recipients)s AS text[]),
        CAST(%(d_domains)s AS text[]), CAST(%(d_streams)s AS text[]), CAST(%(d_states)s AS text[])
    ) WITH ORDINALITY AS d(message_id, account_id, recipient, domain, stream, state, n)
    ORDER BY d.n
)
"""
    + events_store.INSERT_POSTGRESQL
)


def _insert_postgresql(
    conn: Connection,
    messages: list[NewMessage],
    deliveries: list[Entry],
    events: list[NewEvent],
    now: datetime,
) -> None:
    columns = list(zip(*deliveries, strict=True)) if deliveries else [()] * 6
    params = {
        "ids": [m.id for m in messages],
        "accounts": [m.account_id for m in messages],
        "streams": [m.stream for m in messages],
        "sources": [m.source for m in messages],
        "froms": [m.from_address for m in messages],
        "subjects": [m.subject for m in messages],
        "headers": [m.message_id_header for m in messages],
        "raws": [m.raw for m in messages],
        "sizes": [len(m.raw) for m in messages],
        "utf8": [m.smtputf8 for m in messages],
        "tags": [json.dumps(m.tags) for m in messages],
        "metas": [json.dumps(m.meta) for m in messages],
        "keys": [m.dkim_keys for m in messages],
        "now": now,
    }
    for name, values in zip(_DELIVERY_PARAMS, columns, strict=True):
        params[name] = list(values)
    params |= events_store.postgresql_params(events, now)
    with driver.cursor(conn) as cursor:
        cursor.execute(_INSERT_POSTGRESQL, params)


_DELIVERY_PARAMS = ("d_messages", "d_accounts", "d_recipients", "d_domains", "d_streams", "d_states")


# SQLite: fixed statements run by the driver, one row per parameter tuple (SQLAlchemy's execution costs
# more CPU than SQLite spends on the rows, and the accept transaction holds the one write lock meanwhile).
# Values are bound as SQLAlchemy binds the columns: times as `driver.sqlite_time`, JSON as `driver.json_text`,
# booleans as 0/1, bytes as a blob.
_INSERT_MESSAGES_SQLITE = (
    "INSERT INTO messages (id, account_id, stream, source, from_address, subject, message_id_header, raw, "
    "size, smtputf8, tags, metadata, dkim_keys, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_DELIVERIES_SQLITE = (
    "INSERT INTO deliveries (message_id, account_id, recipient, domain, stream, state, attempts, "
    "next_attempt_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?7, ?7)"
)


def _insert_sqlite(
    conn: Connection,
    messages: list[NewMessage],
    deliveries: list[Entry],
    events: list[NewEvent],
    now: datetime,
) -> None:
    at = driver.sqlite_time(now)
    dumps = driver.json_text
    driver.sqlite_many(
        conn,
        _INSERT_MESSAGES_SQLITE,
        [
            (
                m.id,
                m.account_id,
                m.stream,
                m.source,
                m.from_address,
                m.subject,
                m.message_id_header,
                m.raw,
                len(m.raw),
                int(m.smtputf8),
                dumps(m.tags),
                dumps(m.meta),
                m.dkim_keys,
                at,
            )
            for m in messages
        ],
    )
    if deliveries:
        driver.sqlite_many(conn, _INSERT_DELIVERIES_SQLITE, [(*entry, at) for entry in deliveries])
    if events:
        driver.sqlite_many(conn, events_store.INSERT_SQLITE, events_store.sqlite_rows(events, now))


def _suppressed_events(conn: Connection, m: NewMessage, dropped: Suppressed, now: datetime) -> list[NewEvent]:
    data = {"reason": dropped.reason, "scope": dropped.scope}
    events = [NewEvent(m.account_id, "suppressed", data, m.id, dropped.recipient)]
    if dropped.trap:
        events.append(NewEvent(m.account_id, "trap_hit", {"stream": m.stream}, m.id, dropped.recipient))
        entry = suppressions.NewSuppression(
            None, "address", dropped.recipient, "spam-trap", f"spam trap hit by account {m.account_id}"
        )
        suppressions.add(conn, entry, actor="system", now=now, note=f"message {m.id}")
    return events


def get_message(conn: Connection, account_id: int, message_id: str) -> MessageView | None:
    """A message with its recipients' queue state and full event history, scoped to one account."""
    row = conn.execute(
        select(Message).where(Message.id == message_id, Message.account_id == account_id)
    ).first()
    if row is None:
        return None
    recipients = [
        RecipientState(r.recipient, r.state, r.attempts, r.next_attempt_at, r.last_code, r.last_reply)
        for r in conn.execute(
            select(Delivery).where(Delivery.message_id == message_id).order_by(Delivery.id)
        ).all()
    ]
    events = for_message(conn, message_id)
    return MessageView(
        row.id,
        row.account_id,
        row.stream,
        row.source,
        row.from_address,
        row.subject,
        row.message_id_header,
        row.size,
        row.tags,
        row._mapping["metadata"],
        row.created_at,
        recipients,
        events,
    )


def get_raw(conn: Connection, account_id: int, message_id: str) -> bytes | None:
    return conn.scalar(select(Message.raw).where(Message.id == message_id, Message.account_id == account_id))
