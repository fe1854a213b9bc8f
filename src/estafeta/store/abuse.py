"""Abuse desk statements: reports mailed to abuse@ and postmaster@ (kept, listed), the traces they are matched
by (our domains, messages), and terminating an account (its status, keys, credentials and campaigns)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, insert, select, update

from estafeta.store import driver
from estafeta.store.models import AbuseReport, Account, ApiKey, Campaign, Domain, Message, SmtpCredential

TERMINATED = "terminated"
OPEN_CAMPAIGNS = ("draft", "scheduled", "sending", "paused")


@dataclass(frozen=True)
class NewReport:
    mailbox: str
    reporter: str | None
    subject: str
    category: str
    account_id: int | None
    message_id: str | None
    recipient: str | None
    matched_by: str
    excerpt: str
    size: int
    raw: bytes


@dataclass(frozen=True)
class ReportRow:
    id: int
    received_at: datetime
    mailbox: str
    reporter: str | None
    subject: str
    category: str
    account_id: int | None
    message_id: str | None
    recipient: str | None
    matched_by: str
    excerpt: str
    review_id: int | None
    size: int


_COLUMNS = (
    AbuseReport.id,
    AbuseReport.received_at,
    AbuseReport.mailbox,
    AbuseReport.reporter,
    AbuseReport.subject,
    AbuseReport.category,
    AbuseReport.account_id,
    AbuseReport.message_id,
    AbuseReport.recipient,
    AbuseReport.matched_by,
    AbuseReport.excerpt,
    AbuseReport.review_id,
    AbuseReport.size,
)


def _row(r: object) -> ReportRow:
    return ReportRow(*r)  # type: ignore[misc]


def add_report(conn: Connection, new: NewReport, now: datetime) -> ReportRow:
    report_id = conn.execute(
        insert(AbuseReport).values(received_at=now, review_id=None, **vars(new)).returning(AbuseReport.id)
    ).scalar_one()
    fields = {k: v for k, v in vars(new).items() if k != "raw"}
    return ReportRow(id=report_id, received_at=now, review_id=None, **fields)


def set_review(conn: Connection, report_id: int, review_id: int) -> None:
    conn.execute(update(AbuseReport).where(AbuseReport.id == report_id).values(review_id=review_id))


def list_reports(
    conn: Connection,
    *,
    matched: bool | None = None,
    account_id: int | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[ReportRow]:
    """Reports newest first; `matched` False is the operators' inbox (no account found)."""
    query = select(*_COLUMNS).order_by(AbuseReport.id.desc()).limit(limit)
    if matched is not None:
        query = query.where(
            AbuseReport.account_id.is_not(None) if matched else AbuseReport.account_id.is_(None)
        )
    if account_id is not None:
        query = query.where(AbuseReport.account_id == account_id)
    if before_id is not None:
        query = query.where(AbuseReport.id < before_id)
    return [_row(r) for r in conn.execute(query).all()]


def get_report(conn: Connection, report_id: int) -> tuple[ReportRow, bytes] | None:
    """A report and the message as kept."""
    row = conn.execute(select(*_COLUMNS, AbuseReport.raw).where(AbuseReport.id == report_id)).first()
    return (_row(row[:-1]), row[-1]) if row else None


def domain_account(conn: Connection, domain: str) -> int | None:
    """The account that owns a sending domain (DKIM d= of our signatures)."""
    return conn.scalar(select(Domain.account_id).where(Domain.name == domain))


def message_account(conn: Connection, message_id: str) -> int | None:
    return conn.scalar(select(Message.account_id).where(Message.id == message_id))


# -- termination --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Termination:
    account_id: int
    by: str
    reason: str
    at: datetime


def terminate(conn: Connection, account_id: int, actor: str, reason: str, now: datetime) -> bool:
    """Mark the account terminated (who, when, why); False when it was terminated already."""
    return bool(
        conn.execute(
            update(Account)
            .where(Account.id == account_id, Account.status != TERMINATED)
            .values(status=TERMINATED, terminated_at=now, terminated_by=actor, termination_reason=reason)
        ).rowcount
    )


def termination(conn: Connection, account_id: int) -> Termination | None:
    row = conn.execute(
        select(Account.terminated_by, Account.termination_reason, Account.terminated_at).where(
            Account.id == account_id, Account.status == TERMINATED
        )
    ).first()
    return Termination(account_id, row[0] or "", row[1] or "", row[2]) if row else None


_TERMINATED = f"SELECT id, terminated_at FROM accounts WHERE status = '{TERMINATED}'"
_TERMINATED_AFTER = {
    "sqlite": f"{_TERMINATED} AND terminated_at > :after",
    "postgresql": f"{_TERMINATED} AND terminated_at > %(after)s",
}


def terminated_since(conn: Connection, after: datetime | None) -> tuple[set[int], datetime | None]:
    """Accounts terminated after `after` (all of them for None), and the latest termination time seen.

    Delivery asks at every claim, so this is driver-level SQL (`driver`)."""
    with driver.cursor(conn) as cursor:
        if after is None:
            cursor.execute(_TERMINATED)
        else:
            bound = driver.sqlite_time(after) if conn.dialect.name == "sqlite" else after
            cursor.execute(_TERMINATED_AFTER[conn.dialect.name], {"after": bound})
        rows = cursor.fetchall()
    times = [driver.read_time(at) for _, at in rows if at is not None]
    return {account_id for account_id, _ in rows}, max(times, default=after)


def revoke_credentials(conn: Connection, account_id: int, now: datetime) -> tuple[list[str], list[str]]:
    """Revoke every API key and SMTP credential of the account; returns (key prefixes, usernames)."""
    keys = conn.execute(
        update(ApiKey)
        .where(ApiKey.account_id == account_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(ApiKey.prefix)
    ).scalars()
    prefixes = list(keys)
    logins = conn.execute(
        update(SmtpCredential)
        .where(SmtpCredential.account_id == account_id, SmtpCredential.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(SmtpCredential.username)
    ).scalars()
    return prefixes, list(logins)


def stop_campaigns(conn: Connection, account_id: int, now: datetime) -> int:
    """Cancel the account's campaigns that have not finished; returns how many."""
    return conn.execute(
        update(Campaign)
        .where(Campaign.account_id == account_id, Campaign.state.in_(OPEN_CAMPAIGNS))
        .values(state="cancelled", paused_for="", finished_at=now, error="account terminated")
    ).rowcount


def account_exists(conn: Connection, account_id: int) -> bool:
    return conn.scalar(select(func.count()).where(Account.id == account_id)) == 1
