"""SMTP relay credentials: one row per username, revoked rows kept for the record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from estafeta.store.models import Account, SmtpCredential


@dataclass(frozen=True)
class SmtpCredentialRow:
    id: int
    account_id: int
    username: str
    secret_hash: str
    created_at: datetime
    revoked_at: datetime | None


def _row(row: object) -> SmtpCredentialRow:
    return SmtpCredentialRow(
        row.id,  # type: ignore[attr-defined]
        row.account_id,  # type: ignore[attr-defined]
        row.username,  # type: ignore[attr-defined]
        row.secret_hash,  # type: ignore[attr-defined]
        row.created_at,  # type: ignore[attr-defined]
        row.revoked_at,  # type: ignore[attr-defined]
    )


def add_credential(
    conn: Connection, account_id: int, username: str, secret_hash: str, now: datetime
) -> SmtpCredentialRow:
    new_id = conn.execute(
        insert(SmtpCredential)
        .values(account_id=account_id, username=username, secret_hash=secret_hash, created_at=now)
        .returning(SmtpCredential.id)
    ).scalar_one()
    return SmtpCredentialRow(new_id, account_id, username, secret_hash, now, None)


def find_credential(conn: Connection, username: str) -> SmtpCredentialRow | None:
    """The credential with this username, unless its account is terminated."""
    row = conn.execute(
        select(SmtpCredential)
        .join(Account, Account.id == SmtpCredential.account_id)
        .where(SmtpCredential.username == username, Account.status != "terminated")
    ).first()
    return _row(row) if row else None


def list_credentials(conn: Connection, account_id: int) -> list[SmtpCredentialRow]:
    rows = conn.execute(
        select(SmtpCredential).where(SmtpCredential.account_id == account_id).order_by(SmtpCredential.id)
    ).all()
    return [_row(r) for r in rows]


def revoke_credential(conn: Connection, account_id: int, username: str, now: datetime) -> bool:
    """Revoke an active credential of the account; False when there is none by that name."""
    result = conn.execute(
        update(SmtpCredential)
        .where(
            SmtpCredential.account_id == account_id,
            SmtpCredential.username == username,
            SmtpCredential.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    return result.rowcount == 1
