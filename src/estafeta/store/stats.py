"""Statistics queries: event counts per hour and dimension, and receivers' Postmaster figures.

Counting is grouped in SQL by hour and by the raw dimensions (sender address, stream, tags, campaign
metadata, recipient domain, event type, bounce kind, machine flag); `estafeta.stats` folds them into
sending domains, providers, campaigns and the asked-for buckets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Text, cast, func, select
from sqlalchemy.dialects import postgresql, sqlite

from estafeta.store.models import Domain, Event, Message, PostmasterStat


@dataclass(frozen=True)
class CountRow:
    hour: datetime
    from_address: str | None
    stream: str | None
    tags: str | None  # the JSON text of the message's tags
    campaign: str | None  # metadata.campaign_id
    recipient_domain: str | None
    type: str
    bounce_kind: str | None
    machine: bool
    count: int


@dataclass(frozen=True)
class PostmasterRow:
    provider: str
    domain: str
    day: date
    messages: int
    spam_rate: float
    dkim_pass_rate: float
    spf_pass_rate: float
    reputation: str
    fetched_at: datetime


def _hour(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        return func.date_trunc("hour", func.timezone("UTC", Event.created_at))
    return func.strftime("%Y-%m-%d %H:00:00", Event.created_at)


def _domain_of(conn: Connection, column: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return func.lower(func.split_part(column, "@", 2))
    return func.lower(func.substr(column, func.instr(column, "@") + 1))


def _as_hour(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def event_counts(conn: Connection, account_id: int, since: datetime, until: datetime) -> list[CountRow]:
    """Events of the account created in [since, until), counted per hour and raw dimension."""
    columns = (
        _hour(conn).label("hour"),
        Message.from_address,
        Message.stream,
        cast(Message.tags, Text).label("tags"),
        Message.meta["campaign_id"].as_string().label("campaign"),
        _domain_of(conn, Event.recipient).label("recipient_domain"),
        Event.type,
        Event.data["bounce"]["kind"].as_string().label("bounce_kind"),
        Event.data["machine"].as_boolean().label("machine"),
    )
    query = (
        select(*columns, func.count().label("count"))
        .select_from(Event)
        .outerjoin(Message, Message.id == Event.message_id)
        .where(Event.account_id == account_id, Event.created_at >= since, Event.created_at < until)
        .group_by(*columns)
    )
    return [
        CountRow(
            _as_hour(r.hour),
            r.from_address,
            r.stream,
            r.tags,
            None if r.campaign is None else str(r.campaign),
            r.recipient_domain or None,
            r.type,
            r.bounce_kind,
            bool(r.machine),
            r.count,
        )
        for r in conn.execute(query).all()
    ]


def mx_hosts(conn: Connection, account_id: int, since: datetime, until: datetime) -> dict[str, str]:
    """Recipient domain → an MX host that accepted mail for it in the period (to tell providers apart)."""
    domain = _domain_of(conn, Event.recipient)
    query = (
        select(domain, func.max(Event.data["mx"].as_string()))
        .where(
            Event.account_id == account_id,
            Event.type == "delivered",
            Event.created_at >= since,
            Event.created_at < until,
        )
        .group_by(domain)
    )
    return {d: mx for d, mx in conn.execute(query).all() if d and mx}


def sending_domains(conn: Connection, account_id: int | None = None) -> list[str]:
    query = select(Domain.name).order_by(Domain.name)
    if account_id is not None:
        query = query.where(Domain.account_id == account_id)
    return list(conn.scalars(query))


def save_postmaster(conn: Connection, rows: list[PostmasterRow]) -> None:
    """Insert or refresh each (provider, domain, day)."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    for row in rows:
        values = {
            "messages": row.messages,
            "spam_rate": row.spam_rate,
            "dkim_pass_rate": row.dkim_pass_rate,
            "spf_pass_rate": row.spf_pass_rate,
            "reputation": row.reputation,
            "fetched_at": row.fetched_at,
        }
        statement = dialect_insert(PostmasterStat).values(
            provider=row.provider, domain=row.domain, day=row.day, **values
        )
        conn.execute(
            statement.on_conflict_do_update(index_elements=["provider", "domain", "day"], set_=values)
        )


def postmaster(conn: Connection, domains: list[str], first: date, last: date) -> list[PostmasterRow]:
    """Figures for these sending domains on days first..last, inclusive."""
    if not domains:
        return []
    query = (
        select(PostmasterStat)
        .where(PostmasterStat.domain.in_(domains), PostmasterStat.day >= first, PostmasterStat.day <= last)
        .order_by(PostmasterStat.day, PostmasterStat.provider, PostmasterStat.domain)
    )
    return [
        PostmasterRow(
            r.provider,
            r.domain,
            r.day,
            r.messages,
            r.spam_rate,
            r.dkim_pass_rate,
            r.spf_pass_rate,
            r.reputation,
            r.fetched_at,
        )
        for r in conn.execute(query).all()
    ]
