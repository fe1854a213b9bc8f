"""Reputation statements: rolling outcome counts from `events`, sending standing, reviews and their audit,
warm-up usage, and what happens to held or cancelled queue entries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, select, text, update

from estafeta.store import events
from estafeta.store.accounts import get_state, set_state
from estafeta.store.driver import read_time, sqlite_query
from estafeta.store.events import NewEvent
from estafeta.store.models import (
    QUEUED_EVENTS,
    Account,
    AccountPlan,
    Delivery,
    Event,
    Message,
    Plan,
    Review,
    ReviewAudit,
    SendingStanding,
)
from estafeta.store.plans import PlanRow, plan_row

HALTED = ("paused", "suspended")
CANCELLABLE = ("queued", "deferred", "held")


@dataclass(frozen=True)
class Counts:
    """Outcomes in the window: the latest `window_messages` deliveries/bounces of the last hours."""

    delivered: int
    hard_bounced: int
    soft_bounced: int
    complaints: int
    trap_hits: int
    unsubscribes: int
    since: datetime
    abuse_reports: int = 0  # verified reports mailed to abuse@ (`abuse_reported`)


@dataclass(frozen=True)
class Standing:
    stream: str
    state: str
    reason: str
    changed_by: str
    changed_at: datetime | None
    measured_after: int | None = None  # event id: metrics count only later events


@dataclass(frozen=True)
class ReviewRow:
    id: int
    account_id: int
    stream: str
    reason: str
    state: str
    metrics: dict[str, Any]
    answers: dict[str, Any]
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    note: str


@dataclass(frozen=True)
class AuditRow:
    action: str
    actor: str
    note: str
    at: datetime


def counts(
    conn: Connection,
    account_id: int,
    now: datetime,
    window_messages: int,
    window_hours: float,
    after_event: int | None = None,
) -> Counts:
    """Count the account's outcomes over the window (only events after `after_event`); complaints, trap
    hits and unsubscribes are counted from the oldest outcome in it when the window is full."""
    start = now - timedelta(hours=window_hours)
    floor = after_event or 0
    latest = (
        select(
            Event.type.label("type"),
            Event.data[("bounce", "kind")].as_string().label("kind"),
            Event.data[("bounce", "blame")].as_string().label("blame"),
            Event.created_at.label("at"),
        )
        .where(
            Event.account_id == account_id,
            Event.type.in_(("delivered", "bounced")),
            Event.created_at >= start,
            Event.id > floor,
        )
        .order_by(Event.id.desc())
        .limit(window_messages)
        .subquery()
    )
    # Counted in the database: this runs every few outcomes, in the transaction that records them.
    delivered = hard = soft = total = 0
    oldest = None
    outcomes = select(latest.c.type, latest.c.kind, latest.c.blame, func.count(), func.min(latest.c.at))
    for kind, bounce, blame, count, first in conn.execute(
        outcomes.group_by(latest.c.type, latest.c.kind, latest.c.blame)
    ).all():
        total += count
        oldest = first if oldest is None else min(oldest, first)
        if kind == "delivered":
            delivered += count
        elif _counts_against_sender({"kind": bounce, "blame": blame}):
            hard += count
        else:
            soft += count
    since = oldest if total >= window_messages and oldest is not None else start
    other = dict(
        conn.execute(
            select(Event.type, func.count())
            .where(
                Event.account_id == account_id,
                Event.type.in_(("complained", "trap_hit", "unsubscribed", "abuse_reported")),
                Event.created_at >= since,
                Event.id > floor,
            )
            .group_by(Event.type)
        ).all()
    )
    return Counts(
        delivered,
        hard,
        soft,
        other.get("complained", 0),
        other.get("trap_hit", 0),
        other.get("unsubscribed", 0),
        since,
        other.get("abuse_reported", 0),
    )


# Read for every accepted batch: built once (building a statement costs more than running it).
_STANDINGS = select(SendingStanding).where(SendingStanding.account_id == bindparam("account_id"))
_TIER = select(Account.sending_tier).where(Account.id == bindparam("account_id"))


def standings(conn: Connection, account_id: int) -> dict[str, Standing]:
    """The account's standing per stream; streams without a row are `active`."""
    return _standings(conn.execute(_STANDINGS, {"account_id": account_id}).all())


def _standings(rows: Sequence[Any]) -> dict[str, Standing]:
    """Standings from rows of `sending_standings` columns (a row without a stream stands for none)."""
    found = {
        r.stream: Standing(r.stream, r.state, r.reason, r.changed_by, r.changed_at, r.measured_after)
        for r in rows
        if r.stream is not None
    }
    return _with_defaults(found)


def _with_defaults(found: dict[str, Standing]) -> dict[str, Standing]:
    """`found` with the streams that have no row, as `active`."""
    for stream in ("transactional", "broadcast"):
        found.setdefault(stream, Standing(stream, "active", "", "system", None))
    return found


@dataclass(frozen=True)
class Admission:
    """What the accept gate reads of an account for every storing transaction."""

    tier: int
    standings: dict[str, Standing]
    plan: PlanRow | None


# One statement instead of three (tier, plan, standings): the gate pays it once per account and transaction.
_ADMISSION = (
    select(
        Account.sending_tier,
        Plan.id,  # named as in `plans`, for `plan_row`: no other column selected has these names
        Plan.name,
        Plan.messages_per_month,
        Plan.messages_per_day,
        Plan.contacts,
        Plan.dedicated_pool,
        Plan.created_at,
        SendingStanding.stream,
        SendingStanding.state,
        SendingStanding.reason,
        SendingStanding.changed_by,
        SendingStanding.changed_at,
        SendingStanding.measured_after,
    )
    .select_from(Account)
    .outerjoin(AccountPlan, AccountPlan.account_id == Account.id)
    .outerjoin(Plan, Plan.id == AccountPlan.plan_id)
    .outerjoin(SendingStanding, SendingStanding.account_id == Account.id)
    .where(Account.id == bindparam("account_id"))
)


# SQLite: the same statement run by the driver (SQLAlchemy's execution and result rows cost more CPU than
# SQLite spends on it, while the storing transaction holds the one write lock).
_ADMISSION_SQLITE = (
    "SELECT a.sending_tier, p.id, p.name, p.messages_per_month, p.messages_per_day, p.contacts, "
    "p.dedicated_pool, p.created_at, s.stream, s.state, s.reason, s.changed_by, s.changed_at, "
    "s.measured_after FROM accounts AS a "
    "LEFT OUTER JOIN account_plans AS ap ON ap.account_id = a.id "
    "LEFT OUTER JOIN plans AS p ON p.id = ap.plan_id "
    "LEFT OUTER JOIN sending_standing AS s ON s.account_id = a.id "
    "WHERE a.id = ?"
)


def admission(conn: Connection, account_id: int) -> Admission:
    """The account's warm-up tier, standing per stream (see `standings`) and plan (None: on no plan)."""
    if conn.dialect.name == "sqlite":
        return _admission_sqlite(conn, account_id)
    rows = conn.execute(_ADMISSION, {"account_id": account_id}).all()
    first = rows[0] if rows else None
    plan = plan_row(first) if first is not None and first.id is not None else None
    tier = (first.sending_tier or 0) if first is not None else 0
    return Admission(tier, _standings(rows), plan)


def _admission_sqlite(conn: Connection, account_id: int) -> Admission:
    rows = sqlite_query(conn, _ADMISSION_SQLITE, (account_id,))
    if not rows:
        return Admission(0, _standings(()), None)
    tier, plan_id, name, per_month, per_day, contacts, pool, created_at = rows[0][:8]
    plan = (
        PlanRow(plan_id, name, per_month, per_day, contacts, bool(pool), read_time(created_at))
        if plan_id is not None
        else None
    )
    found = {
        stream: Standing(stream, state, reason, by, None if at is None else read_time(at), after)
        for stream, state, reason, by, at, after in (row[8:] for row in rows)
        if stream is not None
    }
    return Admission(tier or 0, _with_defaults(found), plan)


def set_standing(
    conn: Connection,
    account_id: int,
    stream: str,
    state: str,
    reason: str,
    actor: str,
    now: datetime,
    *,
    fresh_start: bool = False,
) -> None:
    """Set a stream's state; with `fresh_start`, its metrics count only outcomes from now on."""
    values: dict[str, Any] = {"state": state, "reason": reason, "changed_by": actor, "changed_at": now}
    if fresh_start:
        values["measured_after"] = conn.scalar(select(func.max(Event.id))) or 0
    done = conn.execute(
        update(SendingStanding)
        .where(SendingStanding.account_id == account_id, SendingStanding.stream == stream)
        .values(**values)
    ).rowcount
    if not done:
        conn.execute(insert(SendingStanding).values(account_id=account_id, stream=stream, **values))


def usage(conn: Connection, account_id: int, since: datetime) -> int:
    """Recipients queued for the account since `since` (warm-up limits count these)."""
    return (
        conn.scalar(
            select(func.count()).where(
                Event.account_id == account_id,
                text(QUEUED_EVENTS),  # literally the partial index's predicate, so the planner may use it
                Event.created_at >= since,
            )
        )
        or 0
    )


def busy_accounts(conn: Connection, since: datetime) -> dict[int, int]:
    """Recipients queued since `since`, per account that queued any."""
    query = (
        select(Event.account_id, func.count())
        .where(text(QUEUED_EVENTS), Event.created_at >= since)
        .group_by(Event.account_id)
    )
    return {account: count for account, count in conn.execute(query).all()}


def tier(conn: Connection, account_id: int) -> int:
    return conn.scalar(_TIER, {"account_id": account_id}) or 0


def lock_account(conn: Connection, account_id: int) -> int:
    """Hold the account's row until the transaction ends (PostgreSQL; SQLite's writer is already alone) and
    return its warm-up tier as it stands once locked.

    FOR NO KEY UPDATE: rows that merely reference the account (contacts, suppressions) can still be
    written meanwhile."""
    locked = select(Account.sending_tier).where(Account.id == account_id).with_for_update(key_share=True)
    return conn.scalar(locked) or 0


def set_tier(conn: Connection, account_id: int, value: int) -> None:
    conn.execute(update(Account).where(Account.id == account_id).values(sending_tier=value))


def set_contact(conn: Connection, account_id: int, email: str | None) -> None:
    conn.execute(update(Account).where(Account.id == account_id).values(email=email))


def contact(conn: Connection, account_id: int) -> tuple[str, str | None] | None:
    """The account's name and contact address."""
    row = conn.execute(select(Account.name, Account.email).where(Account.id == account_id)).first()
    return (row.name, row.email) if row else None


@dataclass(frozen=True)
class Notice:
    account_id: int
    type: str
    data: dict[str, Any]


NOTICES_CURSOR = "notices_cursor"


def take_notices(conn: Connection, types: list[str], limit: int = 100) -> list[Notice]:
    """Account-level events of `types` after the notices cursor, which moves past them."""
    cursor = get_state(conn, NOTICES_CURSOR)
    rows = conn.execute(
        select(Event.id, Event.account_id, Event.type, Event.data)
        .where(Event.id > int(cursor or 0), Event.type.in_(types), Event.message_id.is_(None))
        .order_by(Event.id)
        .limit(limit)
    ).all()
    if rows:
        set_state(conn, NOTICES_CURSOR, str(rows[-1].id))
    return [Notice(r.account_id, r.type, r.data or {}) for r in rows]


# -- reviews ------------------------------------------------------------------------------------------


def _review(r: Any) -> ReviewRow:
    return ReviewRow(
        r.id,
        r.account_id,
        r.stream,
        r.reason,
        r.state,
        r.metrics,
        r.answers,
        r.created_at,
        r.decided_by,
        r.decided_at,
        r.note,
    )


def open_review(conn: Connection, account_id: int) -> ReviewRow | None:
    row = conn.execute(
        select(Review).where(Review.account_id == account_id, Review.state == "open").order_by(Review.id)
    ).first()
    return _review(row) if row else None


def latest_review(conn: Connection, account_id: int) -> ReviewRow | None:
    row = conn.execute(
        select(Review).where(Review.account_id == account_id).order_by(Review.id.desc())
    ).first()
    return _review(row) if row else None


def request_review(
    conn: Connection,
    account_id: int,
    stream: str,
    reason: str,
    metrics: dict[str, Any],
    now: datetime,
    actor: str = "system",
) -> tuple[int, bool]:
    """Open a review, or add the reason to the account's open one; returns (review id, newly opened)."""
    current = open_review(conn, account_id)
    if current is not None:
        if reason not in current.reason:
            scope = current.stream if current.stream == stream else "all"
            conn.execute(
                update(Review)
                .where(Review.id == current.id)
                .values(reason=f"{current.reason}; {reason}", stream=scope, metrics=metrics)
            )
            audit(conn, current.id, "reason", actor, reason, now)
        return current.id, False
    answers = latest_review(conn, account_id)
    review_id = conn.execute(
        insert(Review)
        .values(
            account_id=account_id,
            stream=stream,
            reason=reason,
            state="open",
            metrics=metrics,
            answers=answers.answers if answers else {},  # the sender's earlier answers carry over
            created_at=now,
            note="",
        )
        .returning(Review.id)
    ).scalar_one()
    audit(conn, review_id, "opened", actor, reason, now)
    return review_id, True


def get_review(conn: Connection, review_id: int) -> ReviewRow | None:
    row = conn.execute(select(Review).where(Review.id == review_id)).first()
    return _review(row) if row else None


def list_reviews(conn: Connection, state: str | None, limit: int = 100) -> list[ReviewRow]:
    query = select(Review).order_by(Review.id).limit(limit)
    if state:
        query = query.where(Review.state == state)
    return [_review(r) for r in conn.execute(query).all()]


def set_answers(conn: Connection, review_id: int, answers: dict[str, Any], actor: str, now: datetime) -> None:
    conn.execute(update(Review).where(Review.id == review_id).values(answers=answers))
    audit(conn, review_id, "answered", actor, "", now)


def decide(conn: Connection, review_id: int, state: str, actor: str, note: str, now: datetime) -> bool:
    """Close an open review; False when it was not open (decided already)."""
    done = conn.execute(
        update(Review)
        .where(Review.id == review_id, Review.state == "open")
        .values(state=state, decided_by=actor, decided_at=now, note=note)
    ).rowcount
    if done:
        audit(conn, review_id, state, actor, note, now)
    return bool(done)


def audit(conn: Connection, review_id: int, action: str, actor: str, note: str, now: datetime) -> None:
    conn.execute(
        insert(ReviewAudit).values(review_id=review_id, action=action, actor=actor, note=note, at=now)
    )


def audit_trail(conn: Connection, review_id: int) -> list[AuditRow]:
    rows = conn.execute(
        select(ReviewAudit).where(ReviewAudit.review_id == review_id).order_by(ReviewAudit.id)
    )
    return [AuditRow(r.action, r.actor, r.note, r.at) for r in rows.all()]


def recent_failures(conn: Connection, account_id: int, limit: int = 20) -> list[dict[str, Any]]:
    """The account's latest bounces and complaints, newest first."""
    query = (
        select(Event.type, Event.recipient, Event.message_id, Event.created_at, Event.data)
        .where(Event.account_id == account_id, Event.type.in_(("bounced", "complained", "abuse_reported")))
        .order_by(Event.id.desc())
        .limit(limit)
    )
    return [
        {
            "type": r.type,
            "recipient": r.recipient,
            "message_id": r.message_id,
            "at": r.created_at,
            "reason": (r.data or {}).get("bounce", {}).get("reason")
            or (r.data or {}).get("feedback_type")
            or (r.data or {}).get("category"),
        }
        for r in conn.execute(query).all()
    ]


def message_stream(conn: Connection, message_id: str) -> str | None:
    return conn.scalar(select(Message.stream).where(Message.id == message_id))


def sample_messages(conn: Connection, account_id: int, limit: int = 10) -> list[dict[str, Any]]:
    """The account's latest messages (id, stream, subject), newest first."""
    query = (
        select(Message.id, Message.stream, Message.subject, Message.created_at)
        .where(Message.account_id == account_id)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(limit)
    )
    return [
        {"id": r.id, "stream": r.stream, "subject": r.subject, "created_at": r.created_at}
        for r in conn.execute(query).all()
    ]


# -- held and cancelled queue entries ----------------------------------------------------------------


def set_entries(
    conn: Connection,
    account_id: int,
    now: datetime,
    *,
    from_states: tuple[str, ...],
    to_state: str,
    event: str,
    message_id: str | None = None,
    stream: str | None = None,
    data: dict[str, Any] | None = None,
    leased_too: bool = False,
) -> int:
    """Move the account's unleased entries in `from_states` to `to_state`, one `event` each; returns how
    many moved. An entry a worker holds right now is left to its attempt, unless `leased_too`: then its
    lease is taken away too, so that the worker's outcome no longer counts."""
    conditions = [Delivery.account_id == account_id, Delivery.state.in_(from_states)]
    if not leased_too:
        conditions.append((Delivery.lease_until.is_(None)) | (Delivery.lease_until < now))
    if message_id is not None:
        conditions.append(Delivery.message_id == message_id)
    if stream is not None:
        conditions.append(Delivery.stream == stream)
    rows = conn.execute(
        update(Delivery)
        .where(and_(*conditions))
        .values(state=to_state, next_attempt_at=now, lease_owner=None, lease_until=None, updated_at=now)
        .returning(Delivery.id, Delivery.message_id, Delivery.recipient)
    ).all()
    events.record(
        conn, (NewEvent(account_id, event, data or {}, r.message_id, r.recipient, r.id) for r in rows), now
    )
    return len(rows)


def _counts_against_sender(bounce: dict[str, object]) -> bool:
    """A dead address (list hygiene) or a receiver refusing the sender itself (spam, authentication,
    blocklists): both are the sender's doing; a full mailbox or a server that is down are not."""
    return bounce.get("kind") == "hard" or bounce.get("blame") == "sender"
