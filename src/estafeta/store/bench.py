"""Read-only queries used by benchmarks."""

from __future__ import annotations

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import aliased

from estafeta.store.models import Campaign, CampaignRecipient, Event


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


def campaign_progress(conn: Connection, campaign_id: int) -> tuple[bool, dict[str, int]]:
    """Whether all of a campaign's recipients are fixed, and its recipients by state (cheap to poll)."""
    fixed = conn.scalar(select(Campaign.recipients_fixed_at).where(Campaign.id == campaign_id)) is not None
    rows = conn.execute(
        select(CampaignRecipient.state, func.count())
        .where(CampaignRecipient.campaign_id == campaign_id)
        .group_by(CampaignRecipient.state)
    ).all()
    return fixed, {state: count for state, count in rows}
