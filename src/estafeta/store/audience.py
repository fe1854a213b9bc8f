"""Lists, contacts, subscriptions (with their consent record) and segments.

Addresses are compared through `email_key`, the lower-cased address, so `Ana@Example.com` and
`ana@example.com` are one contact of an account.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Connection, and_, func, insert, or_, select, text, update
from sqlalchemy.dialects import sqlite

from estafeta.store.models import Contact, MailingList, Segment, Subscription

CHUNK = 500  # values per IN (...) list, well under every backend's parameter limit


@dataclass(frozen=True)
class ListRow:
    id: int
    account_id: int
    name: str
    public_id: str
    from_address: str
    double_opt_in: bool
    created_at: datetime
    counts: dict[str, int] = field(default_factory=dict)  # subscriptions per status


@dataclass(frozen=True)
class ContactRow:
    id: int
    account_id: int
    email: str
    attributes: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class SubscriptionRow:
    contact_id: int
    list_id: int
    list_name: str
    status: str
    consent_source: str
    consent_at: datetime
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None
    unsubscribe_method: str | None
    last_engaged_at: datetime | None
    reconfirm_sent_at: datetime | None


@dataclass(frozen=True)
class SegmentRow:
    id: int
    account_id: int
    list_id: int
    name: str
    match: str
    conditions: list[dict[str, Any]]
    created_at: datetime


@dataclass(frozen=True)
class Member:
    """A contact of a list as campaigns see it."""

    contact_id: int
    email: str
    attributes: dict[str, Any]
    status: str


@dataclass(frozen=True)
class NewSubscription:
    email: str
    attributes: dict[str, Any]
    status: str  # unconfirmed | subscribed
    consent_source: str
    consent_at: datetime


@dataclass(frozen=True)
class Subscribed:
    """What `subscribe_many` did for one address.

    `outcome`: new | renewed | unchanged | kept-unsubscribed.
    """

    contact_id: int
    email: str
    status: str
    outcome: str


def _list(row: Any, counts: dict[str, int] | None = None) -> ListRow:
    return ListRow(
        row.id,
        row.account_id,
        row.name,
        row.public_id,
        row.from_address,
        row.double_opt_in,
        row.created_at,
        counts or {},
    )


def create_list(
    conn: Connection,
    account_id: int,
    name: str,
    public_id: str,
    from_address: str,
    double_opt_in: bool,
    now: datetime,
) -> ListRow:
    new_id = conn.execute(
        insert(MailingList)
        .values(
            account_id=account_id,
            name=name,
            public_id=public_id,
            from_address=from_address,
            double_opt_in=double_opt_in,
            created_at=now,
        )
        .returning(MailingList.id)
    ).scalar_one()
    return ListRow(new_id, account_id, name, public_id, from_address, double_opt_in, now)


def _counts(conn: Connection, list_ids: list[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {i: {} for i in list_ids}
    if not list_ids:
        return out
    query = (
        select(Subscription.list_id, Subscription.status, func.count())
        .where(Subscription.list_id.in_(list_ids))
        .group_by(Subscription.list_id, Subscription.status)
    )
    for list_id, status, count in conn.execute(query).all():
        out[list_id][status] = count
    return out


def get_list(conn: Connection, account_id: int, list_id: int) -> ListRow | None:
    row = conn.execute(
        select(MailingList).where(MailingList.id == list_id, MailingList.account_id == account_id)
    ).first()
    return _list(row, _counts(conn, [row.id])[row.id]) if row else None


def list_by_id(conn: Connection, list_id: int) -> ListRow | None:
    """A list whatever its account (for platform tasks; requests go through `get_list`)."""
    row = conn.execute(select(MailingList).where(MailingList.id == list_id)).first()
    return _list(row) if row else None


def find_list_by_name(conn: Connection, account_id: int, name: str) -> ListRow | None:
    row = conn.execute(
        select(MailingList).where(MailingList.account_id == account_id, MailingList.name == name)
    ).first()
    return _list(row) if row else None


def find_public_list(conn: Connection, public_id: str) -> ListRow | None:
    row = conn.execute(select(MailingList).where(MailingList.public_id == public_id)).first()
    return _list(row) if row else None


def list_lists(conn: Connection, account_id: int) -> list[ListRow]:
    rows = conn.execute(
        select(MailingList).where(MailingList.account_id == account_id).order_by(MailingList.id)
    ).all()
    counts = _counts(conn, [r.id for r in rows])
    return [_list(r, counts[r.id]) for r in rows]


def _contact(row: Any) -> ContactRow:
    return ContactRow(row.id, row.account_id, row.email, row.attributes, row.created_at)


def get_contact(conn: Connection, contact_id: int) -> ContactRow | None:
    row = conn.execute(select(Contact).where(Contact.id == contact_id)).first()
    return _contact(row) if row else None


def find_contact(conn: Connection, account_id: int, email: str) -> ContactRow | None:
    row = conn.execute(
        select(Contact).where(Contact.account_id == account_id, Contact.email_key == email.lower())
    ).first()
    return _contact(row) if row else None


def _existing_contacts(conn: Connection, account_id: int, keys: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for start in range(0, len(keys), CHUNK):
        rows = conn.execute(
            select(Contact.id, Contact.email_key, Contact.attributes).where(
                Contact.account_id == account_id, Contact.email_key.in_(keys[start : start + CHUNK])
            )
        ).all()
        found.update({r.email_key: r for r in rows})
    return found


def _insert_new(conn: Connection, table: Any, rows: list[dict[str, Any]], unique: list[str]) -> list[Any]:
    """Insert the rows that do not exist yet (by the `unique` columns); returns the id and `unique` values
    of those inserted, so only the others need looking up.

    PostgreSQL gets one statement with a column of values per array (`unnest`): a short query text, where
    a multi-row VALUES list would be re-parsed by the driver for every batch; SQLite gets batched VALUES."""
    if not rows:
        return []
    if conn.dialect.name != "postgresql":
        statement = (
            sqlite.insert(table)
            .on_conflict_do_nothing(index_elements=unique)
            .returning(table.id, *(getattr(table, name) for name in unique))
        )
        return list(conn.execute(statement, rows).all())
    columns = table.__table__.c
    names = list(rows[0])
    arrays: dict[str, list[Any]] = {}
    casts = []
    for index, name in enumerate(names):
        column = columns[name]
        values = [row[name] for row in rows]
        if isinstance(column.type, JSON):
            values = [json.dumps(v) for v in values]  # as the engine's JSON columns store them
        process = column.type.bind_processor(conn.dialect)
        arrays[f"c{index}"] = [process(v) for v in values] if process else values
        casts.append(f"CAST(:c{index} AS {column.type.compile(dialect=conn.dialect)}[])")
    statement = text(
        f"INSERT INTO {table.__tablename__} ({', '.join(names)}) SELECT * FROM unnest({', '.join(casts)}) "
        f"ON CONFLICT ({', '.join(unique)}) DO NOTHING RETURNING id, {', '.join(unique)}"
    )
    return list(conn.execute(statement, arrays).all())


def upsert_contacts(
    conn: Connection, account_id: int, contacts: list[tuple[str, dict[str, Any]]], now: datetime
) -> dict[str, int]:
    """Create missing contacts and merge attributes into existing ones; returns id by lower-cased email."""
    wanted: dict[str, tuple[str, dict[str, Any]]] = {}
    for email, attributes in contacts:
        key = email.lower()
        merged = {**wanted.get(key, (email, {}))[1], **attributes}
        wanted[key] = (wanted.get(key, (email, {}))[0], merged)
    new = [
        {"account_id": account_id, "email": email, "email_key": key, "attributes": attrs, "created_at": now}
        for key, (email, attrs) in wanted.items()
    ]
    ids = {row.email_key: row.id for row in _insert_new(conn, Contact, new, ["account_id", "email_key"])}
    existing = _existing_contacts(conn, account_id, [key for key in wanted if key not in ids])
    for key, row in existing.items():
        attributes = wanted[key][1]
        if attributes and {**row.attributes, **attributes} != row.attributes:
            conn.execute(
                update(Contact)
                .where(Contact.id == row.id)
                .values(attributes={**row.attributes, **attributes})
            )
        ids[key] = row.id
    return ids


def subscribe_many(
    conn: Connection,
    account_id: int,
    list_id: int,
    entries: list[NewSubscription],
    *,
    renew: bool,
    now: datetime,
) -> list[Subscribed]:
    """Put contacts on a list with their consent record.

    An address that unsubscribed stays unsubscribed unless `renew` (the person asked again themselves, e.g.
    through the hosted form); an address already subscribed keeps its status and original consent.
    Subscriptions are inserted in batches where none exists; only the others are read and decided on.
    """
    ids = upsert_contacts(conn, account_id, [(e.email, e.attributes) for e in entries], now)
    first: dict[int, NewSubscription] = {}
    for entry in entries:
        first.setdefault(ids[entry.email.lower()], entry)
    new_rows = [
        {
            "contact_id": contact_id,
            "list_id": list_id,
            "status": entry.status,
            "consent_source": entry.consent_source[:200],
            "consent_at": entry.consent_at,
            "confirmed_at": now if entry.status == "subscribed" else None,
        }
        for contact_id, entry in first.items()
    ]
    inserted = {
        row.contact_id for row in _insert_new(conn, Subscription, new_rows, ["contact_id", "list_id"])
    }
    current: dict[int, str] = {}
    id_list = sorted(set(first) - inserted)
    for start in range(0, len(id_list), CHUNK):
        rows = conn.execute(
            select(Subscription.contact_id, Subscription.status).where(
                Subscription.list_id == list_id, Subscription.contact_id.in_(id_list[start : start + CHUNK])
            )
        ).all()
        current.update({r.contact_id: r.status for r in rows})
    out: list[Subscribed] = []
    for contact_id, entry in first.items():
        status = current.get(contact_id, "")
        if contact_id in inserted:
            out.append(Subscribed(contact_id, entry.email, entry.status, "new"))
        elif status == "unsubscribed" and not renew:
            out.append(Subscribed(contact_id, entry.email, status, "kept-unsubscribed"))
        elif status == "subscribed" or (status == "unconfirmed" and entry.status == "unconfirmed"):
            out.append(Subscribed(contact_id, entry.email, status, "unchanged"))
        else:
            conn.execute(
                update(Subscription)
                .where(Subscription.contact_id == contact_id, Subscription.list_id == list_id)
                .values(
                    status=entry.status,
                    consent_source=entry.consent_source[:200],
                    consent_at=entry.consent_at,
                    confirmed_at=now if entry.status == "subscribed" else None,
                    unsubscribed_at=None,
                    unsubscribe_method=None,
                    reconfirm_sent_at=None,
                )
            )
            out.append(Subscribed(contact_id, entry.email, entry.status, "renewed"))
    return out


_SUBSCRIPTION_COLUMNS = (
    Subscription.contact_id,
    Subscription.list_id,
    MailingList.name,
    Subscription.status,
    Subscription.consent_source,
    Subscription.consent_at,
    Subscription.confirmed_at,
    Subscription.unsubscribed_at,
    Subscription.unsubscribe_method,
    Subscription.last_engaged_at,
    Subscription.reconfirm_sent_at,
)


def _subscription(row: Any) -> SubscriptionRow:
    return SubscriptionRow(
        row.contact_id,
        row.list_id,
        row.name,
        row.status,
        row.consent_source,
        row.consent_at,
        row.confirmed_at,
        row.unsubscribed_at,
        row.unsubscribe_method,
        row.last_engaged_at,
        row.reconfirm_sent_at,
    )


def subscriptions_of(conn: Connection, contact_id: int) -> list[SubscriptionRow]:
    """Every list the contact is (or was) on, by list id."""
    rows = conn.execute(
        select(*_SUBSCRIPTION_COLUMNS)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(Subscription.contact_id == contact_id)
        .order_by(Subscription.list_id)
    ).all()
    return [_subscription(r) for r in rows]


def get_subscription(conn: Connection, contact_id: int, list_id: int) -> SubscriptionRow | None:
    row = conn.execute(
        select(*_SUBSCRIPTION_COLUMNS)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(Subscription.contact_id == contact_id, Subscription.list_id == list_id)
    ).first()
    return _subscription(row) if row else None


def confirm(conn: Connection, contact_id: int, list_id: int, now: datetime) -> str | None:
    """Confirm a pending subscription or a re-confirmation; returns the status it had (None: no such row).

    A subscription that ended stays ended: an old confirmation link must not undo an unsubscribe.
    """
    status = conn.scalar(
        select(Subscription.status).where(
            Subscription.contact_id == contact_id, Subscription.list_id == list_id
        )
    )
    if status in ("unconfirmed", "subscribed"):
        values: dict[str, Any] = {"status": "subscribed", "last_engaged_at": now, "reconfirm_sent_at": None}
        if status == "unconfirmed":
            values["confirmed_at"] = now
        conn.execute(
            update(Subscription)
            .where(Subscription.contact_id == contact_id, Subscription.list_id == list_id)
            .values(**values)
        )
    return status


def unsubscribe(
    conn: Connection, contact_id: int, list_ids: Iterable[int] | None, method: str, now: datetime
) -> list[int]:
    """End the contact's subscriptions (to `list_ids`, or all); returns the lists that changed.

    Idempotent: a subscription that already ended keeps its first time and method.
    """
    query = select(Subscription.list_id).where(
        Subscription.contact_id == contact_id, Subscription.status != "unsubscribed"
    )
    if list_ids is not None:
        query = query.where(Subscription.list_id.in_(list(list_ids)))
    changed = list(conn.scalars(query).all())
    if changed:
        conn.execute(
            update(Subscription)
            .where(Subscription.contact_id == contact_id, Subscription.list_id.in_(changed))
            .values(status="unsubscribed", unsubscribed_at=now, unsubscribe_method=method)
        )
    return changed


def mark_engaged(conn: Connection, account_id: int, email: str, now: datetime) -> int:
    """Record engagement (an open, a click, a confirmation) on all of the address's subscriptions."""
    contact_id = conn.scalar(
        select(Contact.id).where(Contact.account_id == account_id, Contact.email_key == email.lower())
    )
    if contact_id is None:
        return 0
    return conn.execute(
        update(Subscription)
        .where(Subscription.contact_id == contact_id, Subscription.status != "unsubscribed")
        .values(last_engaged_at=now, reconfirm_sent_at=None)
    ).rowcount


def members(
    conn: Connection,
    list_id: int,
    *,
    statuses: tuple[str, ...] = ("subscribed",),
    after_id: int = 0,
    limit: int = 1000,
) -> list[Member]:
    """A page of the list's contacts with the given statuses, by contact id."""
    rows = conn.execute(
        select(Contact.id, Contact.email, Contact.attributes, Subscription.status)
        .join(Subscription, Subscription.contact_id == Contact.id)
        .where(
            Subscription.list_id == list_id,
            Subscription.status.in_(statuses),
            Subscription.contact_id > after_id,
        )
        .order_by(Subscription.contact_id)
        .limit(limit)
    ).all()
    return [Member(r.id, r.email, r.attributes, r.status) for r in rows]


def window_end(conn: Connection, list_id: int, after_id: int, size: int) -> int | None:
    """The id of the `size`-th subscribed contact of the list after `after_id`; None when fewer remain."""
    return conn.scalar(
        select(Subscription.contact_id)
        .where(
            Subscription.list_id == list_id,
            Subscription.status == "subscribed",
            Subscription.contact_id > after_id,
        )
        .order_by(Subscription.contact_id)
        .offset(size - 1)
        .limit(1)
    )


def list_contacts(
    conn: Connection,
    list_id: int,
    *,
    status: str | None = None,
    search: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[tuple[ContactRow, SubscriptionRow]]:
    """A page of the list's contacts by id; `search` keeps those whose address contains it."""
    query = (
        select(
            Contact.id,
            Contact.account_id,
            Contact.email,
            Contact.attributes,
            Contact.created_at,
            *_SUBSCRIPTION_COLUMNS,
        )
        .join(Subscription, Subscription.contact_id == Contact.id)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(Subscription.list_id == list_id, Contact.id > after_id)
    )
    if status:
        query = query.where(Subscription.status == status)
    if search:
        query = query.where(Contact.email_key.contains(search.lower(), autoescape=True))
    rows = conn.execute(query.order_by(Contact.id).limit(limit)).all()
    return [(_contact(r), _subscription(r)) for r in rows]


def inactive_since(conn: Connection, cutoff: datetime, limit: int) -> list[tuple[int, int, str]]:
    """(list id, contact id, email) of subscriptions without engagement since `cutoff` and not yet asked to
    re-confirm; engagement counts from the last open/click/confirmation, else from consent."""
    last_seen = func.coalesce(
        Subscription.last_engaged_at, Subscription.confirmed_at, Subscription.consent_at
    )
    rows = conn.execute(
        select(Subscription.list_id, Contact.id, Contact.email)
        .join(Contact, Contact.id == Subscription.contact_id)
        .where(
            Subscription.status == "subscribed",
            Subscription.reconfirm_sent_at.is_(None),
            last_seen < cutoff,
        )
        .order_by(Subscription.list_id, Contact.id)
        .limit(limit)
    ).all()
    return [(r.list_id, r.id, r.email) for r in rows]


def mark_reconfirm_sent(conn: Connection, list_id: int, contact_ids: list[int], now: datetime) -> list[int]:
    """Mark subscriptions as asked to re-confirm; returns the contacts not asked before (so two processes
    sweeping at once never ask anyone twice)."""
    asked: list[int] = []
    for start in range(0, len(contact_ids), CHUNK):
        asked += conn.scalars(
            update(Subscription)
            .where(
                Subscription.list_id == list_id,
                Subscription.contact_id.in_(contact_ids[start : start + CHUNK]),
                Subscription.status == "subscribed",
                Subscription.reconfirm_sent_at.is_(None),
            )
            .values(reconfirm_sent_at=now)
            .returning(Subscription.contact_id)
        ).all()
    return asked


def end_unanswered_reconfirmations(conn: Connection, asked_before: datetime, now: datetime) -> int:
    """Unsubscribe contacts who were asked to re-confirm before `asked_before` and did not answer."""
    return conn.execute(
        update(Subscription)
        .where(
            Subscription.status == "subscribed",
            Subscription.reconfirm_sent_at.is_not(None),
            Subscription.reconfirm_sent_at < asked_before,
            or_(
                Subscription.last_engaged_at.is_(None),
                Subscription.last_engaged_at < Subscription.reconfirm_sent_at,
            ),
        )
        .values(status="unsubscribed", unsubscribed_at=now, unsubscribe_method="not-reconfirmed")
    ).rowcount


def statuses_for(conn: Connection, list_id: int, contact_ids: list[int]) -> dict[int, str]:
    """Current subscription status of each contact on the list (contacts without one are left out)."""
    out: dict[int, str] = {}
    for start in range(0, len(contact_ids), CHUNK):
        rows = conn.execute(
            select(Subscription.contact_id, Subscription.status).where(
                and_(
                    Subscription.list_id == list_id,
                    Subscription.contact_id.in_(contact_ids[start : start + CHUNK]),
                )
            )
        ).all()
        out.update({r.contact_id: r.status for r in rows})
    return out


def attributes_of(conn: Connection, contact_ids: list[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for start in range(0, len(contact_ids), CHUNK):
        rows = conn.execute(
            select(Contact.id, Contact.attributes).where(Contact.id.in_(contact_ids[start : start + CHUNK]))
        ).all()
        out.update({r.id: r.attributes for r in rows})
    return out


def _segment(row: Any) -> SegmentRow:
    return SegmentRow(
        row.id, row.account_id, row.list_id, row.name, row.match, row.conditions, row.created_at
    )


def create_segment(
    conn: Connection,
    account_id: int,
    list_id: int,
    name: str,
    match: str,
    conditions: list[dict[str, Any]],
    now: datetime,
) -> SegmentRow:
    new_id = conn.execute(
        insert(Segment)
        .values(
            account_id=account_id,
            list_id=list_id,
            name=name,
            match=match,
            conditions=conditions,
            created_at=now,
        )
        .returning(Segment.id)
    ).scalar_one()
    return SegmentRow(new_id, account_id, list_id, name, match, conditions, now)


def get_segment(conn: Connection, account_id: int, segment_id: int) -> SegmentRow | None:
    row = conn.execute(
        select(Segment).where(Segment.id == segment_id, Segment.account_id == account_id)
    ).first()
    return _segment(row) if row else None


def list_segments(conn: Connection, account_id: int, list_id: int) -> list[SegmentRow]:
    rows = conn.execute(
        select(Segment)
        .where(Segment.account_id == account_id, Segment.list_id == list_id)
        .order_by(Segment.id)
    ).all()
    return [_segment(r) for r in rows]
