"""Read-only queries used by benchmarks."""

from __future__ import annotations

from sqlalchemy import Connection, select
from sqlalchemy.orm import aliased

from estafeta.store.models import Event


def delivery_latencies(conn: Connection) -> list[float]:
    """Seconds from `accepted` to `delivered` for every delivered recipient."""
    accepted = aliased(Event)
    delivered = aliased(Event)
    rows = conn.execute(
        select(accepted.created_at, delivered.created_at)
        .join(delivered, delivered.message_id == accepted.message_id)
        .where(accepted.type == "accepted", delivered.type == "delivered")
    ).all()
    return [(d - a).total_seconds() for a, d in rows]
