"""MTA-STS policies as fetched, and the session counts and sent reports of TLS-RPT."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from estafeta.store.models import MtaStsPolicy, TlsReportSent, TlsSessionCount


@dataclass(frozen=True)
class PolicyRow:
    domain: str
    policy_id: str
    mode: str
    mx: list[str]
    max_age: int
    text: str
    fetched_at: datetime
    expires_at: datetime


def _row(found: Any) -> PolicyRow:
    return PolicyRow(
        found.domain,
        found.policy_id,
        found.mode,
        list(found.mx),
        found.max_age,
        found.text,
        found.fetched_at,
        found.expires_at,
    )


def newest_policy(conn: Connection, domain: str) -> PolicyRow | None:
    """The policy most recently fetched for `domain` (expired or not: the caller decides)."""
    found = conn.execute(
        select(MtaStsPolicy).where(MtaStsPolicy.domain == domain).order_by(MtaStsPolicy.fetched_at.desc())
    ).first()
    return _row(found) if found else None


def policies(conn: Connection, domain: str, policy_ids: Iterable[str]) -> dict[str, PolicyRow]:
    """The policies of `domain` with these ids (those still kept)."""
    wanted = list(policy_ids)
    if not wanted:
        return {}
    query = select(MtaStsPolicy).where(MtaStsPolicy.domain == domain, MtaStsPolicy.policy_id.in_(wanted))
    return {row.policy_id: _row(row) for row in conn.execute(query).all()}


def save_policy(conn: Connection, policy: PolicyRow) -> None:
    """Keep a fetched policy; fetching the same id again refreshes it."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    values = {
        "mode": policy.mode,
        "mx": policy.mx,
        "max_age": policy.max_age,
        "text": policy.text,
        "fetched_at": policy.fetched_at,
        "expires_at": policy.expires_at,
    }
    statement = insert(MtaStsPolicy).values(domain=policy.domain, policy_id=policy.policy_id, **values)
    conn.execute(statement.on_conflict_do_update(index_elements=["domain", "policy_id"], set_=values))


@dataclass(frozen=True)
class SessionKey:
    """What one outbound TLS session is counted under (RFC 8460 failure details)."""

    day: date
    policy_domain: str
    policy_type: str  # sts | no-policy-found
    policy_id: str
    result: str  # success | an RFC 8460 result type
    sending_ip: str = ""
    mx_host: str = ""
    receiving_ip: str = ""
    detail: str = ""


@dataclass(frozen=True)
class SessionCount:
    key: SessionKey
    count: int


def add_sessions(conn: Connection, counts: dict[SessionKey, int]) -> None:
    """Add these counts to the day's totals (several delivery processes add to the same rows)."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    columns = list(SessionKey.__dataclass_fields__)
    for key, count in sorted(counts.items(), key=lambda item: tuple(str(v) for v in vars(item[0]).values())):
        statement = insert(TlsSessionCount).values(**vars(key), count=count)
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=columns, set_={"count": TlsSessionCount.count + statement.excluded.count}
            )
        )


def unreported_days(conn: Connection, before: date) -> list[tuple[str, date]]:
    """(destination, day) pairs with sessions before `before` and no report sent yet, oldest first."""
    reported = select(TlsReportSent).where(
        TlsReportSent.policy_domain == TlsSessionCount.policy_domain,
        TlsReportSent.day == TlsSessionCount.day,
    )
    query = (
        select(TlsSessionCount.policy_domain, TlsSessionCount.day)
        .where(TlsSessionCount.day < before, ~reported.exists())
        .distinct()
        .order_by(TlsSessionCount.day, TlsSessionCount.policy_domain)
    )
    return [(domain, day) for domain, day in conn.execute(query)]


def sessions(conn: Connection, policy_domain: str, day: date) -> list[SessionCount]:
    query = select(TlsSessionCount).where(
        TlsSessionCount.policy_domain == policy_domain, TlsSessionCount.day == day
    )
    return [
        SessionCount(
            SessionKey(
                r.day,
                r.policy_domain,
                r.policy_type,
                r.policy_id,
                r.result,
                r.sending_ip,
                r.mx_host,
                r.receiving_ip,
                r.detail,
            ),
            r.count,
        )
        for r in conn.execute(query).all()
    ]


def claim_report(
    conn: Connection, policy_domain: str, day: date, report_id: str, destinations: list[str], now: datetime
) -> bool:
    """Record that this report is being sent; False when another process (or an earlier run) has."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(TlsReportSent).values(
        policy_domain=policy_domain,
        day=day,
        report_id=report_id,
        destinations=destinations,
        outcome="",
        sent_at=now,
    )
    result = conn.execute(statement.on_conflict_do_nothing(index_elements=["policy_domain", "day"]))
    return bool(result.rowcount)


def report_outcome(conn: Connection, policy_domain: str, day: date, outcome: str) -> None:
    conn.execute(
        update(TlsReportSent)
        .where(TlsReportSent.policy_domain == policy_domain, TlsReportSent.day == day)
        .values(outcome=outcome)
    )


@dataclass(frozen=True)
class SentReport:
    policy_domain: str
    day: date
    report_id: str
    destinations: list[str]
    outcome: str
    sent_at: datetime


def sent_reports(conn: Connection, policy_domain: str | None = None) -> list[SentReport]:
    """The reports sent (or found to have no destination), oldest day first."""
    query = select(TlsReportSent).order_by(TlsReportSent.day, TlsReportSent.policy_domain)
    if policy_domain is not None:
        query = query.where(TlsReportSent.policy_domain == policy_domain)
    return [
        SentReport(r.policy_domain, r.day, r.report_id, list(r.destinations), r.outcome, r.sent_at)
        for r in conn.execute(query).all()
    ]


def prune(conn: Connection, before: date) -> int:
    """Forget session counts and sent reports of days before `before`."""
    removed = conn.execute(delete(TlsSessionCount).where(TlsSessionCount.day < before)).rowcount
    return removed + conn.execute(delete(TlsReportSent).where(TlsReportSent.day < before)).rowcount
