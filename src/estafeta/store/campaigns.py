"""Campaigns and their recipients: state changes, the progress cursor, and per-campaign counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, literal, or_, select, update

from estafeta.store.models import (
    Campaign,
    CampaignRecipient,
    Contact,
    Delivery,
    Event,
    Subscription,
    UtcDateTime,
)


class AlreadySent(RuntimeError):
    """A recipient was no longer pending when its message was stored: the transaction must not commit."""


@dataclass(frozen=True)
class NewCampaign:
    account_id: int
    name: str
    list_id: int
    segment_id: int | None
    from_address: str
    reply_to: str
    subject: str
    html: str | None
    text: str | None
    rate: float
    kind: str = "regular"


@dataclass(frozen=True)
class CampaignRow:
    id: int
    account_id: int
    kind: str
    name: str
    list_id: int
    segment_id: int | None
    from_address: str
    reply_to: str
    subject: str
    html: str | None
    text: str | None
    stream: str
    state: str
    scheduled_at: datetime | None
    rate: float
    error: str
    paused_for: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    recipients_fixed_at: datetime | None  # None while recipients are still being fixed (see `cursor`)


@dataclass(frozen=True)
class Pending:
    """A recipient the runner is about to send to."""

    id: int
    contact_id: int
    email: str


@dataclass(frozen=True)
class Progress:
    """Where a recipient ended: `state` is sent, skipped or failed; `message_id` only when sent."""

    recipient_id: int
    state: str
    reason: str = ""
    message_id: str | None = None


def _campaign(row: Any) -> CampaignRow:
    return CampaignRow(
        row.id,
        row.account_id,
        row.kind,
        row.name,
        row.list_id,
        row.segment_id,
        row.from_address,
        row.reply_to,
        row.subject,
        row.html,
        row._mapping["text"],
        row.stream,
        row.state,
        row.scheduled_at,
        row.rate,
        row.error,
        row.paused_for,
        row.created_at,
        row.started_at,
        row.finished_at,
        row.recipients_fixed_at,
    )


def create(
    conn: Connection, new: NewCampaign, now: datetime, state: str = "draft", *, fixed: bool = False
) -> CampaignRow:
    """A new campaign; `fixed` when its caller adds all of its recipients in this transaction."""
    campaign_id = conn.execute(
        insert(Campaign)
        .values(
            account_id=new.account_id,
            kind=new.kind,
            name=new.name,
            list_id=new.list_id,
            segment_id=new.segment_id,
            from_address=new.from_address,
            reply_to=new.reply_to,
            subject=new.subject,
            html=new.html,
            text_body=new.text,
            stream="broadcast",
            state=state,
            rate=new.rate,
            error="",
            created_at=now,
            recipients_fixed_at=now if fixed else None,
        )
        .returning(Campaign.id)
    ).scalar_one()
    found = get(conn, new.account_id, campaign_id)
    assert found is not None
    return found


def get(conn: Connection, account_id: int, campaign_id: int) -> CampaignRow | None:
    row = conn.execute(
        select(Campaign).where(Campaign.id == campaign_id, Campaign.account_id == account_id)
    ).first()
    return _campaign(row) if row else None


def list_for(conn: Connection, account_id: int) -> list[CampaignRow]:
    rows = conn.execute(select(Campaign).where(Campaign.account_id == account_id).order_by(Campaign.id)).all()
    return [_campaign(r) for r in rows]


def transition(
    conn: Connection,
    account_id: int,
    campaign_id: int,
    from_states: tuple[str, ...],
    to_state: str,
    now: datetime,
    **values: Any,
) -> bool:
    """Move the campaign to `to_state` if it is in one of `from_states`; False when it was not."""
    extra = dict(values)
    if to_state != "paused":
        extra["paused_for"] = ""
    if to_state == "sending":
        extra.setdefault("error", "")
    if to_state in ("sent", "cancelled"):
        extra["finished_at"] = now
    result = conn.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.account_id == account_id, Campaign.state.in_(from_states))
        .values(state=to_state, **extra)
    )
    return result.rowcount == 1


def paused_for_standing(conn: Connection, account_id: int | None = None) -> dict[int, set[str]]:
    """The streams with campaigns their account's standing paused, per account (or of one account)."""
    query = (
        select(Campaign.account_id, Campaign.stream)
        .where(Campaign.state == "paused", Campaign.paused_for == "standing")
        .distinct()
    )
    if account_id is not None:
        query = query.where(Campaign.account_id == account_id)
    found: dict[int, set[str]] = {}
    for row in conn.execute(query).all():
        found.setdefault(row.account_id, set()).add(row.stream)
    return found


def resume_after_standing(conn: Connection, account_id: int, stream: str) -> int:
    """Send again the account's campaigns of `stream` that its standing paused."""
    result = conn.execute(
        update(Campaign)
        .where(
            Campaign.account_id == account_id,
            Campaign.stream == stream,
            Campaign.state == "paused",
            Campaign.paused_for == "standing",
        )
        .values(state="sending", paused_for="", error="")
    )
    return result.rowcount


def due_scheduled(conn: Connection, now: datetime) -> list[CampaignRow]:
    rows = conn.execute(
        select(Campaign)
        .where(Campaign.state == "scheduled", Campaign.scheduled_at <= now)
        .order_by(Campaign.id)
    ).all()
    return [_campaign(r) for r in rows]


def sending(conn: Connection) -> list[CampaignRow]:
    rows = conn.execute(select(Campaign).where(Campaign.state == "sending").order_by(Campaign.id)).all()
    return [_campaign(r) for r in rows]


def lease(conn: Connection, campaign_id: int, owner: str, now: datetime, until: datetime) -> bool:
    """Take (or keep) the right to send this campaign, so one process at a time works on it."""
    result = conn.execute(
        update(Campaign)
        .where(
            Campaign.id == campaign_id,
            Campaign.state == "sending",
            or_(Campaign.lease_owner.is_(None), Campaign.lease_owner == owner, Campaign.lease_until < now),
        )
        .values(lease_owner=owner, lease_until=until)
    )
    return result.rowcount == 1


def add_recipients(conn: Connection, campaign_id: int, contacts: list[tuple[int, str]], now: datetime) -> int:
    if contacts:
        conn.execute(
            insert(CampaignRecipient),
            [
                {
                    "campaign_id": campaign_id,
                    "contact_id": contact_id,
                    "email": email,
                    "state": "pending",
                    "reason": "",
                    "updated_at": now,
                }
                for contact_id, email in contacts
            ],
        )
    return len(contacts)


def cursor(conn: Connection, campaign_id: int) -> int | None:
    """The last contact id whose recipients are fixed, locking the campaign's row for this transaction (so
    two processes never fix the same chunk); None once all are fixed."""
    row = conn.execute(
        select(Campaign.recipients_cursor, Campaign.recipients_fixed_at)
        .where(Campaign.id == campaign_id)
        .with_for_update()
    ).one()
    return None if row.recipients_fixed_at is not None else row.recipients_cursor


def add_members(
    conn: Connection, campaign_id: int, list_id: int, after: int, upto: int | None, now: datetime
) -> int:
    """Make the list's subscribed contacts with ids in (`after`, `upto`] recipients, in one statement."""
    chosen = (
        select(
            literal(campaign_id, Campaign.id.type),
            Contact.id,
            Contact.email,
            literal("pending"),
            literal(""),
            literal(now, UtcDateTime()),
        )
        .join(Subscription, Subscription.contact_id == Contact.id)
        .where(
            Subscription.list_id == list_id,
            Subscription.status == "subscribed",
            Subscription.contact_id > after,
        )
    )
    if upto is not None:
        chosen = chosen.where(Subscription.contact_id <= upto)
    columns = ["campaign_id", "contact_id", "email", "state", "reason", "updated_at"]
    return conn.execute(insert(CampaignRecipient).from_select(columns, chosen)).rowcount


def move_cursor(conn: Connection, campaign_id: int, upto: int | None, now: datetime) -> None:
    """Recipients are fixed up to contact `upto`, or all of them when `upto` is None."""
    values: dict[str, Any] = {"recipients_fixed_at": now} if upto is None else {"recipients_cursor": upto}
    conn.execute(update(Campaign).where(Campaign.id == campaign_id).values(**values))


def waiting(conn: Connection, account_id: int) -> int:
    """The account's broadcast messages queued for their first attempt (campaigns keep this bounded)."""
    return int(
        conn.scalar(
            select(func.count()).where(
                Delivery.state == "queued", Delivery.account_id == account_id, Delivery.stream == "broadcast"
            )
        )
        or 0
    )


def next_pending(conn: Connection, campaign_id: int, limit: int) -> list[Pending]:
    rows = conn.execute(
        select(CampaignRecipient.id, CampaignRecipient.contact_id, CampaignRecipient.email)
        .where(CampaignRecipient.campaign_id == campaign_id, CampaignRecipient.state == "pending")
        .order_by(CampaignRecipient.id)
        .limit(limit)
    ).all()
    return [Pending(r.id, r.contact_id, r.email) for r in rows]


def record(conn: Connection, progress: list[Progress], now: datetime) -> None:
    """Move pending recipients on; raises `AlreadySent` if one was no longer pending (rolls back)."""
    for p in progress:
        result = conn.execute(
            update(CampaignRecipient)
            .where(CampaignRecipient.id == p.recipient_id, CampaignRecipient.state == "pending")
            .values(state=p.state, reason=p.reason[:300], message_id=p.message_id, updated_at=now)
        )
        if result.rowcount != 1:
            raise AlreadySent(f"campaign recipient {p.recipient_id} is no longer pending")


def mark_unsubscribed(conn: Connection, campaign_id: int, contact_id: int, now: datetime) -> None:
    conn.execute(
        update(CampaignRecipient)
        .where(
            CampaignRecipient.campaign_id == campaign_id,
            CampaignRecipient.contact_id == contact_id,
            CampaignRecipient.unsubscribed_at.is_(None),
        )
        .values(unsubscribed_at=now)
    )


def message_for(conn: Connection, campaign_id: int, contact_id: int) -> str | None:
    """The message a campaign sent to a contact, if it sent one."""
    return conn.scalar(
        select(CampaignRecipient.message_id).where(
            CampaignRecipient.campaign_id == campaign_id, CampaignRecipient.contact_id == contact_id
        )
    )


def stats(conn: Connection, campaign_id: int) -> dict[str, int]:
    """Recipients by progress state, deliveries of the sent messages by state, unsubscribes, complaints,
    and the messages opened and clicked (each counted once however often)."""
    out = {"recipients": 0, "pending": 0, "sent": 0, "skipped": 0, "failed": 0}
    for state, count in conn.execute(
        select(CampaignRecipient.state, func.count())
        .where(CampaignRecipient.campaign_id == campaign_id)
        .group_by(CampaignRecipient.state)
    ).all():
        out[state] = count
        out["recipients"] += count
    deliveries = conn.execute(
        select(Delivery.state, func.count())
        .join(CampaignRecipient, CampaignRecipient.message_id == Delivery.message_id)
        .where(CampaignRecipient.campaign_id == campaign_id)
        .group_by(Delivery.state)
    ).all()
    for state in ("queued", "deferred", "delivered", "bounced"):
        out[state] = 0
    for state, count in deliveries:
        out[state] = count
    out["unsubscribed"] = int(
        conn.scalar(
            select(func.count()).where(
                CampaignRecipient.campaign_id == campaign_id, CampaignRecipient.unsubscribed_at.is_not(None)
            )
        )
        or 0
    )
    out["complained"] = int(
        conn.scalar(
            select(func.count())
            .select_from(Event)
            .join(CampaignRecipient, CampaignRecipient.message_id == Event.message_id)
            .where(CampaignRecipient.campaign_id == campaign_id, Event.type == "complained")
        )
        or 0
    )
    engaged = conn.execute(
        select(Event.type, func.count(func.distinct(Event.message_id)))
        .join(CampaignRecipient, CampaignRecipient.message_id == Event.message_id)
        .where(CampaignRecipient.campaign_id == campaign_id, Event.type.in_(("opened", "clicked")))
        .group_by(Event.type)
    ).all()
    out.update({"opened": 0, "clicked": 0})
    out.update({kind: count for kind, count in engaged})
    return out


def skip_reasons(conn: Connection, campaign_id: int) -> dict[str, int]:
    rows = conn.execute(
        select(CampaignRecipient.reason, func.count())
        .where(
            CampaignRecipient.campaign_id == campaign_id, CampaignRecipient.state.in_(("skipped", "failed"))
        )
        .group_by(CampaignRecipient.reason)
    ).all()
    return {reason: count for reason, count in rows}
