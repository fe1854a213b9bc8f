"""Reports that come back after delivery (asynchronous bounces, complaints, automatic replies): finding the
queue entry they are about and recording them with their consequences in one transaction."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from estafeta.store import events, suppressions
from estafeta.store.events import NewEvent
from estafeta.store.models import Delivery, Message


@dataclass(frozen=True)
class Target:
    """The queue entry a report is about."""

    delivery_id: int
    message_id: str
    account_id: int
    recipient: str
    state: str


def _target(row: Any) -> Target:
    return Target(row.id, row.message_id, row.account_id, row.recipient, row.state)


_COLUMNS = (Delivery.id, Delivery.message_id, Delivery.account_id, Delivery.recipient, Delivery.state)


def delivery_target(conn: Connection, delivery_id: int) -> Target | None:
    row = conn.execute(select(*_COLUMNS).where(Delivery.id == delivery_id)).first()
    return _target(row) if row else None


def message_targets(conn: Connection, message_id_header: str) -> list[Target]:
    """Every queue entry of the message(s) carrying this Message-ID header."""
    rows = conn.execute(
        select(*_COLUMNS)
        .join(Message, Message.id == Delivery.message_id)
        .where(Message.message_id_header == message_id_header)
        .order_by(Delivery.id)
    ).all()
    return [_target(r) for r in rows]


def record(
    conn: Connection,
    target: Target,
    *,
    event: str,
    data: dict[str, Any],
    now: datetime,
    late_bounce: bool = False,
    entries: Iterable[suppressions.NewSuppression] = (),
    soft_failure: bool = False,
    rule: suppressions.SoftRule | None = None,
) -> None:
    """Log the report's event; with `late_bounce`, a delivered entry becomes bounced; then suppress."""
    if late_bounce:
        conn.execute(
            update(Delivery)
            .where(Delivery.id == target.delivery_id, Delivery.state == "delivered")
            .values(state="bounced", last_reply=str(data.get("diagnostic") or ""), updated_at=now)
        )
    new = NewEvent(target.account_id, event, data, target.message_id, target.recipient, target.delivery_id)
    events.record(conn, [new], now)
    suppressions.after_failure(
        conn,
        account_id=target.account_id,
        recipient=target.recipient,
        message_id=target.message_id,
        entries=entries,
        soft_failure=soft_failure,
        rule=rule,
        now=now,
    )
