"""Queue statements: claim due entries under a lease, record outcomes fenced by that lease.

Claiming is one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)`: on PostgreSQL concurrent
workers skip each other's rows; SQLite has a single writer, so the clause is simply not rendered there.
Entries of an account stream that is paused or suspended are not claimed (a correlated `NOT EXISTS` on
`sending_standing`, so only `deliveries` rows are locked); they wait in the queue.
An outcome only counts if the worker still holds the lease, so a worker that lost its lease (it was too
slow, another worker took over) cannot overwrite what the new owner recorded.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, func, or_, select, text, true, update

from estafeta.store import events, suppressions
from estafeta.store.events import NewEvent
from estafeta.store.models import Delivery, Event, Message
from estafeta.store.reputation import halted_clause

OPEN_STATES = ("queued", "deferred")


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    message_id: str
    account_id: int
    recipient: str
    domain: str
    stream: str
    attempts: int
    created_at: datetime
    raw: bytes
    smtputf8: bool


@dataclass(frozen=True)
class Finish:
    """What became of one attempt; `state` is the entry's new state.

    `suppress` lists suppression entries the outcome creates and `soft_failure` marks a soft failure that
    counts toward the persistent-soft-bounce rule; both are written with the outcome's event.
    """

    delivery_id: int
    state: str  # delivered | deferred | bounced
    next_attempt_at: datetime
    code: int | None
    reply: str
    event: str  # delivered | deferred | bounced
    data: dict[str, Any]
    counts_as_attempt: bool = True
    suppress: tuple[suppressions.NewSuppression, ...] = ()
    soft_failure: bool = False


def claim(
    conn: Connection,
    owner: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    skip_domains: Collection[str] = (),
) -> list[Claimed]:
    """Lease up to `limit` due entries, oldest first, leaving those of `skip_domains` in the queue."""
    due = (
        select(Delivery.id)
        .where(
            Delivery.state.in_(OPEN_STATES),
            Delivery.next_attempt_at <= now,
            or_(Delivery.lease_until.is_(None), Delivery.lease_until < now),
            ~halted_clause(),  # a paused or suspended stream's mail waits
            Delivery.domain.not_in(skip_domains) if skip_domains else true(),
        )
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Delivery)
    )
    rows = conn.execute(
        update(Delivery)
        .where(Delivery.id.in_(due.scalar_subquery()))
        .values(lease_owner=owner, lease_until=lease_until)
        .returning(
            Delivery.id,
            Delivery.message_id,
            Delivery.account_id,
            Delivery.recipient,
            Delivery.domain,
            Delivery.stream,
            Delivery.attempts,
            Delivery.created_at,
        )
    ).all()
    if not rows:
        return []
    message_ids = {r.message_id for r in rows}
    bodies = {
        m.id: (m.raw, m.smtputf8)
        for m in conn.execute(
            select(Message.id, Message.raw, Message.smtputf8).where(Message.id.in_(message_ids))
        ).all()
    }
    claimed = [
        Claimed(
            r.id,
            r.message_id,
            r.account_id,
            r.recipient,
            r.domain,
            r.stream,
            r.attempts,
            r.created_at,
            *bodies[r.message_id],
        )
        for r in rows
    ]
    claimed.sort(key=lambda c: c.delivery_id)
    return claimed


_FINISH = (
    update(Delivery)
    .where(Delivery.id == bindparam("p_id"), Delivery.lease_owner == bindparam("p_owner"))
    .values(
        state=bindparam("p_state"),
        next_attempt_at=bindparam("p_next"),
        lease_owner=None,
        lease_until=None,
        last_code=bindparam("p_code"),
        last_reply=bindparam("p_reply"),
        updated_at=bindparam("p_now"),
        attempts=Delivery.attempts + bindparam("p_attempt"),
    )
)


# PostgreSQL: the whole group in one statement (one round trip instead of three): the outcomes as arrays,
# the entries still ours updated, their events inserted in the outcomes' order. The UPDATE locks the rows,
# and re-checks the lease on a row another transaction changed meanwhile (READ COMMITTED).
_FINISH_POSTGRESQL = text(
    """
WITH outcome AS (
    SELECT * FROM unnest(
        CAST(:ids AS bigint[]), CAST(:states AS text[]), CAST(:nexts AS timestamptz[]),
        CAST(:codes AS integer[]), CAST(:replies AS text[]), CAST(:attempts AS integer[]),
        CAST(:events AS text[]), CAST(:data AS json[])
    ) WITH ORDINALITY AS o(id, state, next_attempt_at, code, reply, attempt, event, data, n)
), finished AS (
    UPDATE deliveries AS d
    SET state = o.state, next_attempt_at = o.next_attempt_at, lease_owner = NULL, lease_until = NULL,
        last_code = o.code, last_reply = o.reply, updated_at = :now, attempts = d.attempts + o.attempt
    FROM outcome AS o
    WHERE d.id = o.id AND d.lease_owner = :owner
    RETURNING d.id, d.account_id, d.message_id, d.recipient
), logged AS (
    INSERT INTO events (account_id, message_id, delivery_id, recipient, type, created_at, data)
    SELECT f.account_id, f.message_id, f.id, f.recipient, o.event, :now, o.data
    FROM finished AS f JOIN outcome AS o ON o.id = f.id
    ORDER BY o.n
)
SELECT id, account_id, message_id, recipient FROM finished
"""
)


class _Held(NamedTuple):
    id: int
    account_id: int
    message_id: str
    recipient: str


def finish(
    conn: Connection,
    owner: str,
    now: datetime,
    outcomes: list[Finish],
    soft_rule: suppressions.SoftRule | None = None,
) -> int:
    """Apply outcomes whose lease `owner` still holds; returns how many were applied.

    A handful of statements whatever the batch size, so that a group commit costs little more than its
    fsync: on PostgreSQL one, on SQLite (where a statement is no round trip) the entries still ours,
    locked, one executemany update and one multi-row insert of events.
    """
    if not outcomes:
        return 0
    if conn.dialect.name == "postgresql":
        held = _finish_postgresql(conn, owner, now, outcomes)
    else:
        held = _finish_each(conn, owner, now, outcomes)
    mine = [o for o in outcomes if o.delivery_id in held]
    for o in mine:
        if o.suppress or o.soft_failure:
            row = held[o.delivery_id]
            suppressions.after_failure(
                conn,
                account_id=row.account_id,
                recipient=row.recipient,
                message_id=row.message_id,
                entries=o.suppress,
                soft_failure=o.soft_failure,
                rule=soft_rule,
                now=now,
            )
    return len(mine)


def _finish_postgresql(
    conn: Connection, owner: str, now: datetime, outcomes: list[Finish]
) -> dict[int, _Held]:
    rows = conn.execute(
        _FINISH_POSTGRESQL,
        {
            "ids": [o.delivery_id for o in outcomes],
            "states": [o.state for o in outcomes],
            "nexts": [o.next_attempt_at for o in outcomes],
            "codes": [o.code for o in outcomes],
            "replies": [o.reply for o in outcomes],
            "attempts": [1 if o.counts_as_attempt else 0 for o in outcomes],
            "events": [o.event for o in outcomes],
            "data": [json.dumps(o.data) for o in outcomes],
            "now": now,
            "owner": owner,
        },
    ).all()
    return {row.id: _Held(row.id, row.account_id, row.message_id, row.recipient) for row in rows}


def _finish_each(conn: Connection, owner: str, now: datetime, outcomes: list[Finish]) -> dict[int, _Held]:
    held = {
        row.id: _Held(row.id, row.account_id, row.message_id, row.recipient)
        for row in conn.execute(
            select(Delivery.id, Delivery.account_id, Delivery.message_id, Delivery.recipient)
            .where(Delivery.id.in_([o.delivery_id for o in outcomes]), Delivery.lease_owner == owner)
            .with_for_update()  # where it is rendered: no claim may take them before this commits
        ).all()
    }
    mine = [o for o in outcomes if o.delivery_id in held]
    if not mine:
        return held
    conn.execute(
        _FINISH,
        [
            {
                "p_id": o.delivery_id,
                "p_owner": owner,
                "p_state": o.state,
                "p_next": o.next_attempt_at,
                "p_code": o.code,
                "p_reply": o.reply,
                "p_now": now,
                "p_attempt": 1 if o.counts_as_attempt else 0,
            }
            for o in mine
        ],
    )
    happened = []
    for o in mine:
        row = held[o.delivery_id]
        happened.append(
            NewEvent(row.account_id, o.event, o.data, row.message_id, row.recipient, o.delivery_id)
        )
    events.record(conn, happened, now)
    return held


def renew(conn: Connection, owner: str, delivery_ids: list[int], lease_until: datetime) -> int:
    """Extend the lease on entries still being worked on."""
    if not delivery_ids:
        return 0
    result = conn.execute(
        update(Delivery)
        .where(Delivery.id.in_(delivery_ids), Delivery.lease_owner == owner)
        .values(lease_until=lease_until)
    )
    return result.rowcount


def release(conn: Connection, owner: str, delivery_ids: list[int]) -> int:
    """Give entries back untouched (shutdown): they are due again at once for any worker."""
    if not delivery_ids:
        return 0
    result = conn.execute(
        update(Delivery)
        .where(Delivery.id.in_(delivery_ids), Delivery.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
    )
    return result.rowcount


def state_counts(conn: Connection, account_id: int | None = None) -> dict[str, int]:
    query = select(Delivery.state, func.count()).group_by(Delivery.state)
    if account_id is not None:
        query = query.where(Delivery.account_id == account_id)
    return {state: count for state, count in conn.execute(query).all()}


def domain_state_counts(conn: Connection) -> dict[str, dict[str, int]]:
    """Entries per recipient domain and state, for summaries like the demo's table."""
    query = select(Delivery.domain, Delivery.state, func.count()).group_by(Delivery.domain, Delivery.state)
    out: dict[str, dict[str, int]] = {}
    for domain, state, count in conn.execute(query).all():
        out.setdefault(domain, {})[state] = count
    return out


def event_counts_by_domain(conn: Connection, event_type: str) -> dict[str, int]:
    query = (
        select(Delivery.domain, func.count())
        .join(Event, Event.delivery_id == Delivery.id)
        .where(Event.type == event_type)
        .group_by(Delivery.domain)
    )
    return {domain: count for domain, count in conn.execute(query).all()}
