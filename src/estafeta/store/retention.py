"""Pruning what only grows: old events, finished webhook deliveries, the bodies of finished messages.

Rows are read in id order, which is the order they were written in, and only the leading run of rows that
may go is pruned: each round reads at most `limit` rows whatever the table's size, and stops at the first
row that must stay (the rest is younger, or it is itself still in use: a webhook delivery being replayed
finishes within the retry period). Each function runs in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from estafeta.store.accounts import get_state, set_state
from estafeta.store.models import (
    Delivery,
    Event,
    Message,
    WaitedBody,
    WebhookDelivery,
    WebhookEndpoint,
)

FINAL_DELIVERY_STATES = ("delivered", "bounced", "suppressed", "cancelled")
BODIES_CURSOR = "retention_bodies_after"  # the newest message id whose body was looked at
WAITED_CURSOR = "retention_bodies_waiting_after"  # where the walk over them stands


def _leading(rows: Sequence[Any], may_go: Callable[[Any], bool]) -> list[Any]:
    """Ids of the rows (oldest first) before the first one that must stay."""
    ids = []
    for row in rows:
        if not may_go(row):
            break
        ids.append(row.id)
    return ids


def prune_events(conn: Connection, before: datetime, limit: int) -> int:
    """Events logged before `before`."""
    rows = conn.execute(select(Event.id, Event.created_at).order_by(Event.id).limit(limit)).all()
    ids = _leading(rows, lambda row: row.created_at < before)
    if ids:
        conn.execute(delete(Event).where(Event.id.in_(ids)))
    return len(ids)


def prune_webhook_deliveries(conn: Connection, before: datetime, limit: int) -> int:
    """Webhook deliveries created before `before` that were delivered or given up, or that still wait for
    an endpoint which is disabled (its backlog that old is dropped rather than kept for ever)."""
    rows = conn.execute(
        select(WebhookDelivery.id, WebhookDelivery.created_at, WebhookDelivery.state, WebhookEndpoint.enabled)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .order_by(WebhookDelivery.id)
        .limit(limit)
    ).all()
    ids = _leading(
        rows,
        lambda row: row.created_at < before and (row.state in ("delivered", "failed") or not row.enabled),
    )
    if ids:
        conn.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
    return len(ids)


def prune_bodies(conn: Connection, before: datetime, limit: int) -> int:
    """Empty the stored bytes of messages accepted before `before` whose every recipient is final.

    The message, its recipients and its events stay; only the body, which nothing reads once delivery is
    over, goes. Messages are visited once, from a cursor; one still waiting then (held for review, or
    queued in a paused stream) keeps its body and is remembered for `prune_waited_bodies`. Returns how
    many messages were visited."""
    after = get_state(conn, BODIES_CURSOR) or ""
    rows = conn.execute(
        select(Message.id, Message.created_at).where(Message.id > after).order_by(Message.id).limit(limit)
    ).all()
    ids = _leading(rows, lambda row: row.created_at < before)
    if not ids:
        return 0
    waiting = _waiting(conn, ids)
    if done := [i for i in ids if i not in waiting]:
        conn.execute(update(Message).where(Message.id.in_(done)).values(raw=b""))
    if waiting:
        conn.execute(insert(WaitedBody), [{"message_id": i} for i in sorted(waiting)])
    set_state(conn, BODIES_CURSOR, ids[-1])
    return len(ids)


def prune_waited_bodies(conn: Connection, before: datetime, limit: int) -> int:
    """Empty the bodies of messages that `prune_bodies` passed while they were still waiting and whose
    every recipient is final now (a review rejected them, or released them and they were delivered).

    They were older than the cutoff when they were passed, so `before` has nothing to add. The remembered
    messages (`waited_bodies`) are walked `limit` at a time from a cursor of their own, back to the first
    when the walk reaches the last (so a run looks at each once); those still waiting stay remembered.
    Returns how many were looked at."""
    after = get_state(conn, WAITED_CURSOR) or ""
    looked_at = list(
        conn.scalars(
            select(WaitedBody.message_id)
            .where(WaitedBody.message_id > after)
            .order_by(WaitedBody.message_id)
            .limit(limit)
        )
    )
    if not looked_at and not after:
        return 0
    waiting = _waiting(conn, looked_at) if looked_at else set()
    if done := [i for i in looked_at if i not in waiting]:
        conn.execute(update(Message).where(Message.id.in_(done)).values(raw=b""))
        conn.execute(delete(WaitedBody).where(WaitedBody.message_id.in_(done)))
    set_state(conn, WAITED_CURSOR, looked_at[-1] if len(looked_at) == limit else "")
    return len(looked_at)


def _waiting(conn: Connection, message_ids: list[str]) -> set[str]:
    """Those of the messages with a recipient not final yet."""
    found = conn.scalars(
        select(Delivery.message_id)
        .where(Delivery.message_id.in_(message_ids), Delivery.state.not_in(FINAL_DELIVERY_STATES))
        .distinct()
    )
    return set(found)
