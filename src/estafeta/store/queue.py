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

from sqlalchemy import Connection, func, select, update

from estafeta.store import driver, suppressions
from estafeta.store.models import Delivery, Event
from estafeta.store.reputation import HALTED

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
    with driver.cursor(conn) as cursor:
        if conn.dialect.name == "postgresql":
            return _claim_postgresql(cursor, owner, now, lease_until, limit, skip_domains)
        return _claim_sqlite(cursor, owner, now, lease_until, limit, skip_domains)


# Claims and outcomes are most of what delivery asks of the database: driver-level SQL (`driver`).
_OPEN = ", ".join(f"'{state}'" for state in OPEN_STATES)
_HALTED = ", ".join(f"'{state}'" for state in HALTED)
_DUE = f"""
    SELECT d.id FROM deliveries AS d
    WHERE d.state IN ({_OPEN}) AND d.next_attempt_at <= {{now}}
        AND (d.lease_until IS NULL OR d.lease_until < {{now}})
        AND NOT EXISTS (
            SELECT 1 FROM sending_standing AS s
            WHERE s.account_id = d.account_id AND s.stream = d.stream AND s.state IN ({_HALTED})
        ){{skip}}
    ORDER BY d.next_attempt_at, d.id
    LIMIT {{limit}}"""
_CLAIMED = "id, message_id, account_id, recipient, domain, stream, attempts, created_at"

_DUE_SQLITE = _DUE.format(
    now=":now", skip=" AND d.domain NOT IN (SELECT value FROM json_each(:skip))", limit=":limit"
)
_CLAIM_SQLITE = f"""
UPDATE deliveries SET lease_owner = :owner, lease_until = :until
WHERE id IN ({_DUE_SQLITE})
RETURNING {_CLAIMED}
"""
_BODIES_SQLITE = "SELECT id, raw, smtputf8 FROM messages WHERE id IN (SELECT value FROM json_each(?))"

# PostgreSQL: one round trip; each message's body comes once, with the first of its entries.
_CLAIM_POSTGRESQL = f"""
WITH claimed AS (
    UPDATE deliveries SET lease_owner = %(owner)s, lease_until = %(until)s
    WHERE id IN ({{due}} FOR UPDATE OF d SKIP LOCKED)
    RETURNING {_CLAIMED}
)
SELECT c.id, c.message_id, c.account_id, c.recipient, c.domain, c.stream, c.attempts, c.created_at,
    CASE WHEN row_number() OVER (PARTITION BY c.message_id ORDER BY c.id) = 1 THEN m.raw END, m.smtputf8
FROM claimed AS c JOIN messages AS m ON m.id = c.message_id
"""
_CLAIM_POSTGRESQL_ALL, _CLAIM_POSTGRESQL_SKIPPING = (
    _CLAIM_POSTGRESQL.format(due=_DUE.format(now="%(now)s", skip=skip, limit="%(limit)s"))
    for skip in ("", " AND d.domain <> ALL(CAST(%(skip)s AS text[]))")
)


def _claim_sqlite(
    cursor: Any, owner: str, now: datetime, lease_until: datetime, limit: int, skip_domains: Collection[str]
) -> list[Claimed]:
    at = driver.sqlite_time(now)
    params = {
        "owner": owner,
        "until": driver.sqlite_time(lease_until),
        "now": at,
        "skip": json.dumps(list(skip_domains)),
        "limit": limit,
    }
    rows = cursor.execute(_CLAIM_SQLITE, params).fetchall()
    if not rows:
        return []
    wanted = json.dumps(list({row[1] for row in rows}))
    bodies = {mid: (raw, bool(utf8)) for mid, raw, utf8 in cursor.execute(_BODIES_SQLITE, (wanted,))}
    claimed = [
        Claimed(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            driver.read_time(r[7]),
            *bodies[r[1]],
        )
        for r in rows
    ]
    claimed.sort(key=lambda c: c.delivery_id)
    return claimed


def _claim_postgresql(
    cursor: Any, owner: str, now: datetime, lease_until: datetime, limit: int, skip_domains: Collection[str]
) -> list[Claimed]:
    params = {"owner": owner, "until": lease_until, "now": now, "limit": limit}
    if skip_domains:
        params["skip"] = list(skip_domains)
    cursor.execute(_CLAIM_POSTGRESQL_SKIPPING if skip_domains else _CLAIM_POSTGRESQL_ALL, params)
    rows = cursor.fetchall()
    bodies = {r[1]: r[8] for r in rows if r[8] is not None}
    claimed = [
        Claimed(r[0], r[1], r[2], r[3], r[4], r[5], r[6], driver.read_time(r[7]), bodies[r[1]], r[9])
        for r in rows
    ]
    claimed.sort(key=lambda c: c.delivery_id)
    return claimed


# PostgreSQL: the whole group in one statement (one round trip instead of three): the outcomes as arrays,
# the entries still ours updated, their events inserted in the outcomes' order. The UPDATE locks the rows,
# and re-checks the lease on a row another transaction changed meanwhile (READ COMMITTED).
_FINISH_POSTGRESQL = """
WITH outcome AS (
    SELECT * FROM unnest(
        CAST(%(ids)s AS bigint[]), CAST(%(states)s AS text[]), CAST(%(nexts)s AS timestamptz[]),
        CAST(%(codes)s AS integer[]), CAST(%(replies)s AS text[]), CAST(%(attempts)s AS integer[]),
        CAST(%(events)s AS text[]), CAST(%(data)s AS json[])
    ) WITH ORDINALITY AS o(id, state, next_attempt_at, code, reply, attempt, event, data, n)
), finished AS (
    UPDATE deliveries AS d
    SET state = o.state, next_attempt_at = o.next_attempt_at, lease_owner = NULL, lease_until = NULL,
        last_code = o.code, last_reply = o.reply, updated_at = %(now)s, attempts = d.attempts + o.attempt
    FROM outcome AS o
    WHERE d.id = o.id AND d.lease_owner = %(owner)s
    RETURNING d.id, d.account_id, d.message_id, d.recipient
), logged AS (
    INSERT INTO events (account_id, message_id, delivery_id, recipient, type, created_at, data)
    SELECT f.account_id, f.message_id, f.id, f.recipient, o.event, %(now)s, o.data
    FROM finished AS f JOIN outcome AS o ON o.id = f.id
    ORDER BY o.n
)
SELECT id, account_id, message_id, recipient FROM finished
"""

# SQLite: a statement is no round trip, so one update per outcome, each saying whether the lease held.
_FINISH_SQLITE = """
UPDATE deliveries
SET state = ?, next_attempt_at = ?, lease_owner = NULL, lease_until = NULL, last_code = ?, last_reply = ?,
    updated_at = ?, attempts = attempts + ?
WHERE id = ? AND lease_owner = ?
RETURNING account_id, message_id, recipient
"""
_EVENT_SQLITE = """
INSERT INTO events (account_id, message_id, delivery_id, recipient, type, created_at, data)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""


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
    fsync: on PostgreSQL one, on SQLite (where a statement is no round trip) one update per outcome and
    one insert of the events.
    """
    if not outcomes:
        return 0
    with driver.cursor(conn) as cursor:
        if conn.dialect.name == "postgresql":
            held = _finish_postgresql(cursor, owner, now, outcomes)
        else:
            held = _finish_sqlite(cursor, owner, now, outcomes)
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


def _finish_postgresql(cursor: Any, owner: str, now: datetime, outcomes: list[Finish]) -> dict[int, _Held]:
    cursor.execute(
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
    )
    return {row[0]: _Held(*row) for row in cursor.fetchall()}


def _finish_sqlite(cursor: Any, owner: str, now: datetime, outcomes: list[Finish]) -> dict[int, _Held]:
    at = driver.sqlite_time(now)
    held: dict[int, _Held] = {}
    logged = []
    for o in outcomes:
        attempt = 1 if o.counts_as_attempt else 0
        params = (
            o.state,
            driver.sqlite_time(o.next_attempt_at),
            o.code,
            o.reply,
            at,
            attempt,
            o.delivery_id,
            owner,
        )
        row = cursor.execute(_FINISH_SQLITE, params).fetchone()
        if row is None:
            continue  # the lease was lost: whoever holds it now reports
        account_id, message_id, recipient = row
        held[o.delivery_id] = _Held(o.delivery_id, account_id, message_id, recipient)
        logged.append((account_id, message_id, o.delivery_id, recipient, o.event, at, json.dumps(o.data)))
    if logged:
        cursor.executemany(_EVENT_SQLITE, logged)
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
