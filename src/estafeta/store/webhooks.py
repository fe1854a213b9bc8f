"""Webhook endpoints, the outbox of deliveries, and the fan-out cursor over the event log.

Fan-out reads events after a cursor kept in `platform_state`; the cursor row is locked for the
transaction, so with several processes each event is fanned out exactly once. Event ids only grow, but on
PostgreSQL a transaction can commit a higher id before a lower one: a missing id stops the fan-out until
the caller has waited for it long enough and passes it as `skip_gap` (rolled-back inserts leave such holes).

Claiming works like the mail queue's (lease, `FOR UPDATE SKIP LOCKED`), with one more rule: a delivery
waits while an older one for the same endpoint and message is still pending, so each endpoint sees the
events of a message in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Select,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import aliased

from estafeta.store.accounts import set_state_if_absent
from estafeta.store.events import EventRow
from estafeta.store.models import Event, Message, PlatformState, WebhookDelivery, WebhookEndpoint

CURSOR_KEY = "webhooks.fanout_cursor"
ALL_TYPES = "*"


@dataclass(frozen=True)
class EndpointRow:
    id: int
    account_id: int
    url: str
    description: str
    event_types: list[str]
    secret: str
    enabled: bool
    created_at: datetime
    updated_at: datetime

    def wants(self, event_type: str) -> bool:
        return not self.event_types or ALL_TYPES in self.event_types or event_type in self.event_types


@dataclass(frozen=True)
class MessageContext:
    stream: str
    tags: list[str]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class FanOut:
    created: int  # deliveries written
    events: int  # events consumed
    gap: int | None  # the first missing event id the fan-out stopped at


@dataclass(frozen=True)
class Claimed:
    id: int
    endpoint_id: int
    url: str
    secret: str
    payload: str
    attempts: int
    retry_from: datetime


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    endpoint_id: int
    event_id: int | None
    event_type: str
    message_id: str | None
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    response_snippet: str | None
    created_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    payload: str


def _endpoint(row: Any) -> EndpointRow:
    return EndpointRow(
        row.id,
        row.account_id,
        row.url,
        row.description,
        list(row.event_types or []),
        row.secret,
        row.enabled,
        row.created_at,
        row.updated_at,
    )


def _delivery(row: Any) -> DeliveryRow:
    return DeliveryRow(
        row.id,
        row.endpoint_id,
        row.event_id,
        row.event_type,
        row.message_id,
        row.state,
        row.attempts,
        row.next_attempt_at if row.state == "pending" else None,
        row.last_status,
        row.last_error,
        row.response_snippet,
        row.created_at,
        row.last_attempt_at,
        row.delivered_at,
        row.payload,
    )


# -- endpoints -------------------------------------------------------------------------------------
def create_endpoint(
    conn: Connection,
    account_id: int,
    url: str,
    event_types: list[str],
    description: str,
    secret: str,
    now: datetime,
    enabled: bool = True,
) -> EndpointRow:
    """A new endpoint receives the events logged after this moment."""
    newest = conn.scalar(select(func.max(Event.id))) or 0
    set_state_if_absent(conn, CURSOR_KEY, str(newest))
    new_id = conn.execute(
        insert(WebhookEndpoint)
        .values(
            account_id=account_id,
            url=url,
            description=description,
            event_types=event_types,
            secret=secret,
            enabled=enabled,
            after_event_id=newest,
            created_at=now,
            updated_at=now,
        )
        .returning(WebhookEndpoint.id)
    ).scalar_one()
    return EndpointRow(new_id, account_id, url, description, event_types, secret, enabled, now, now)


def _scope(query: Any, account_id: int | None) -> Any:
    return query if account_id is None else query.where(WebhookEndpoint.account_id == account_id)


def list_endpoints(conn: Connection, account_id: int | None = None) -> list[EndpointRow]:
    query = _scope(select(WebhookEndpoint), account_id).order_by(WebhookEndpoint.id)
    return [_endpoint(r) for r in conn.execute(query).all()]


def get_endpoint(conn: Connection, account_id: int | None, endpoint_id: int) -> EndpointRow | None:
    row = conn.execute(
        _scope(select(WebhookEndpoint), account_id).where(WebhookEndpoint.id == endpoint_id)
    ).first()
    return _endpoint(row) if row else None


def update_endpoint(
    conn: Connection, account_id: int | None, endpoint_id: int, changes: dict[str, Any], now: datetime
) -> EndpointRow | None:
    """Apply `changes` (url, description, event_types, enabled, secret); None for an unknown endpoint."""
    if changes:
        query = (
            update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).values(**changes, updated_at=now)
        )
        if account_id is not None:
            query = query.where(WebhookEndpoint.account_id == account_id)
        conn.execute(query)
    return get_endpoint(conn, account_id, endpoint_id)


def delete_endpoint(conn: Connection, account_id: int | None, endpoint_id: int) -> bool:
    """Remove the endpoint and its delivery log."""
    if get_endpoint(conn, account_id, endpoint_id) is None:
        return False
    conn.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id))
    conn.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))
    return True


# -- fan-out ---------------------------------------------------------------------------------------
def fan_out(
    conn: Connection,
    limit: int,
    render: Callable[[EventRow, MessageContext | None], str],
    now: datetime,
    skip_gap: int | None = None,
) -> FanOut:
    """Turn events after the cursor into deliveries for every enabled endpoint that wants them."""
    cursor_value = conn.scalar(
        select(PlatformState.value).where(PlatformState.key == CURSOR_KEY).with_for_update()
    )
    if cursor_value is None:  # first run: the history before it is not replayed to anyone
        set_state_if_absent(conn, CURSOR_KEY, str(conn.scalar(select(func.max(Event.id))) or 0))
        return FanOut(0, 0, None)
    cursor = int(cursor_value)
    listening: dict[int, list[tuple[int, EndpointRow]]] = {}  # account → (after which event, endpoint)
    for row in conn.execute(select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True))).all():
        listening.setdefault(row.account_id, []).append((row.after_event_id, _endpoint(row)))
    if not listening:
        # Nobody listens: the events are passed over unread (an endpoint created later only receives
        # what is logged after it), so a platform without webhooks spends nothing on its event log.
        newest = conn.scalar(select(func.max(Event.id))) or cursor
        if newest > cursor:
            _move_cursor(conn, newest)
        return FanOut(0, newest - cursor, None)
    # Ids and accounts first, to find where the log is complete; whole rows only for listening accounts.
    ids = conn.execute(
        select(Event.id, Event.account_id).where(Event.id > cursor).order_by(Event.id).limit(limit)
    ).all()
    taken_ids: list[int] = []
    gap = None
    expected = cursor + 1
    for r in ids:
        if r.id != expected and expected != skip_gap:
            gap = expected
            break
        taken_ids.append(r.id)
        expected = r.id + 1
    if not taken_ids:
        return FanOut(0, 0, gap)
    wanted_ids = [r.id for r in ids[: len(taken_ids)] if r.account_id in listening]
    taken = [
        EventRow(r.id, r.account_id, r.message_id, r.recipient, r.type, r.created_at, r.data)
        for r in (
            conn.execute(select(Event).where(Event.id.in_(wanted_ids)).order_by(Event.id)).all()
            if wanted_ids
            else []
        )
    ]
    deliveries: list[dict[str, Any]] = []
    if taken:
        message_ids = {e.message_id for e in taken if e.message_id}
        contexts = {
            m.id: MessageContext(m.stream, list(m.tags or []), dict(m.meta or {}))
            for m in conn.execute(
                select(Message.id, Message.stream, Message.tags, Message.meta.label("meta")).where(
                    Message.id.in_(message_ids)
                )
            ).all()
        }
        for event in taken:
            endpoints = listening[event.account_id]
            wanted = [ep for after, ep in endpoints if event.id > after and ep.wants(event.type)]
            if not wanted:
                continue
            body = render(event, contexts.get(event.message_id or ""))
            deliveries.extend(
                {
                    "endpoint_id": ep.id,
                    "account_id": event.account_id,
                    "event_id": event.id,
                    "message_id": event.message_id,
                    "event_type": event.type,
                    "payload": body,
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "retry_from": now,
                    "created_at": now,
                }
                for ep in wanted
            )
    if deliveries:
        conn.execute(insert(WebhookDelivery), deliveries)
    _move_cursor(conn, taken_ids[-1])
    return FanOut(len(deliveries), len(taken_ids), gap)


def _move_cursor(conn: Connection, event_id: int) -> None:
    conn.execute(update(PlatformState).where(PlatformState.key == CURSOR_KEY).values(value=str(event_id)))


def add_delivery(
    conn: Connection, endpoint: EndpointRow, event_type: str, payload: str, now: datetime
) -> int:
    """A delivery that is not about a logged event (the endpoint test)."""
    return conn.execute(
        insert(WebhookDelivery)
        .values(
            endpoint_id=endpoint.id,
            account_id=endpoint.account_id,
            event_id=None,
            message_id=None,
            event_type=event_type,
            payload=payload,
            state="pending",
            attempts=0,
            next_attempt_at=now,
            retry_from=now,
            created_at=now,
        )
        .returning(WebhookDelivery.id)
    ).scalar_one()


# -- dispatch --------------------------------------------------------------------------------------
def _due_deliveries() -> Select[tuple[int, int]]:
    """Due deliveries not waiting behind an earlier pending one of the same message and endpoint, oldest
    first; built once (the self-join's alias makes building it cost more than running it)."""
    d = WebhookDelivery
    earlier = aliased(WebhookDelivery)
    now = bindparam("now")
    blocked = exists().where(
        earlier.endpoint_id == d.endpoint_id,
        earlier.message_id == d.message_id,
        earlier.id < d.id,
        earlier.state == "pending",
    )
    return (
        select(d.id, d.endpoint_id)
        .join(WebhookEndpoint, WebhookEndpoint.id == d.endpoint_id)
        .where(
            d.state == "pending",
            d.next_attempt_at <= now,
            or_(d.lease_until.is_(None), d.lease_until < now),
            WebhookEndpoint.enabled.is_(True),
            ~blocked,
        )
        .order_by(d.next_attempt_at, d.id)
        .limit(bindparam("limit", type_=Integer))
        .with_for_update(skip_locked=True, of=d)
    )


_DUE_DELIVERIES = _due_deliveries()


def claim(
    conn: Connection,
    owner: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    room: Callable[[int], int],
) -> list[Claimed]:
    """Lease due deliveries, at most `room(endpoint_id)` more per endpoint, oldest first."""
    d = WebhookDelivery
    candidates = conn.execute(_DUE_DELIVERIES, {"now": now, "limit": limit}).all()
    picked: list[int] = []
    taken: dict[int, int] = {}
    for delivery_id, endpoint_id in candidates:
        if taken.get(endpoint_id, 0) < room(endpoint_id):
            taken[endpoint_id] = taken.get(endpoint_id, 0) + 1
            picked.append(delivery_id)
    if not picked:
        return []
    conn.execute(update(d).where(d.id.in_(picked)).values(lease_owner=owner, lease_until=lease_until))
    rows = conn.execute(
        select(
            d.id,
            d.endpoint_id,
            WebhookEndpoint.url,
            WebhookEndpoint.secret,
            d.payload,
            d.attempts,
            d.retry_from,
        )
        .join(WebhookEndpoint, WebhookEndpoint.id == d.endpoint_id)
        .where(d.id.in_(picked))
        .order_by(d.id)
    ).all()
    return [Claimed(r.id, r.endpoint_id, r.url, r.secret, r.payload, r.attempts, r.retry_from) for r in rows]


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to; without `next_attempt_at` a failed attempt was the last one."""

    delivery_id: int
    at: datetime
    delivered: bool
    status: int | None
    error: str | None
    snippet: str | None
    next_attempt_at: datetime | None


def finish(conn: Connection, owner: str, outcomes: list[Outcome]) -> int:
    """Record attempts whose lease `owner` still holds; returns how many were recorded."""
    recorded = 0
    for o in outcomes:
        values: dict[str, Any] = {
            "attempts": WebhookDelivery.attempts + 1,
            "last_status": o.status,
            "last_error": o.error,
            "response_snippet": o.snippet,
            "last_attempt_at": o.at,
            "lease_owner": None,
            "lease_until": None,
        }
        if o.delivered:
            values.update(state="delivered", delivered_at=o.at)
        elif o.next_attempt_at is None:
            values["state"] = "failed"
        else:
            values["next_attempt_at"] = o.next_attempt_at
        result = conn.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == o.delivery_id, WebhookDelivery.lease_owner == owner)
            .values(**values)
        )
        recorded += result.rowcount
    return recorded


def release(conn: Connection, owner: str, delivery_ids: list[int]) -> None:
    """Give back leases of deliveries not attempted (shutdown)."""
    if delivery_ids:
        conn.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(delivery_ids), WebhookDelivery.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
        )


# -- delivery log ----------------------------------------------------------------------------------
def list_deliveries(
    conn: Connection,
    account_id: int | None,
    endpoint_id: int,
    *,
    state: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[DeliveryRow]:
    """Newest first; `before_id` is the cursor."""
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if account_id is not None:
        query = query.where(WebhookDelivery.account_id == account_id)
    if state:
        query = query.where(WebhookDelivery.state == state)
    if before_id is not None:
        query = query.where(WebhookDelivery.id < before_id)
    return [_delivery(r) for r in conn.execute(query.order_by(WebhookDelivery.id.desc()).limit(limit)).all()]


def get_delivery(
    conn: Connection, account_id: int | None, endpoint_id: int, delivery_id: int
) -> DeliveryRow | None:
    query = select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint_id
    )
    if account_id is not None:
        query = query.where(WebhookDelivery.account_id == account_id)
    row = conn.execute(query).first()
    return _delivery(row) if row else None


def replay(
    conn: Connection, account_id: int | None, endpoint_id: int, delivery_id: int, now: datetime
) -> DeliveryRow | None:
    """Send a delivery again now, with a fresh retry period; None if it is unknown or being sent right now."""
    query = (
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.endpoint_id == endpoint_id,
            or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
        )
        .values(state="pending", next_attempt_at=now, retry_from=now, lease_owner=None, lease_until=None)
    )
    if account_id is not None:
        query = query.where(WebhookDelivery.account_id == account_id)
    if conn.execute(query).rowcount != 1:
        return None
    return get_delivery(conn, account_id, endpoint_id, delivery_id)


def backlog(conn: Connection) -> dict[str, int]:
    """Deliveries waiting (`pending`) and given up (`failed`), for the operators' metrics."""
    query = (
        select(WebhookDelivery.state, func.count())
        .where(WebhookDelivery.state.in_(("pending", "failed")))
        .group_by(WebhookDelivery.state)
    )
    return {"pending": 0, "failed": 0, **{state: count for state, count in conn.execute(query).all()}}


def fanout_lag(conn: Connection) -> int:
    """Events logged but not yet fanned out."""
    cursor = conn.scalar(select(PlatformState.value).where(PlatformState.key == CURSOR_KEY))
    newest = conn.scalar(select(func.max(Event.id))) or 0
    return max(0, newest - int(cursor)) if cursor is not None else 0
