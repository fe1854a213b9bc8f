"""Platform-operator keys: the credential of `/v1/admin/…` endpoints, separate from account API keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from estafeta.store.models import AdminKey


@dataclass(frozen=True)
class AdminKeyRow:
    id: int
    prefix: str
    secret_hash: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


def add_admin_key(conn: Connection, prefix: str, secret_hash: str, name: str, now: datetime) -> int:
    return conn.execute(
        insert(AdminKey)
        .values(prefix=prefix, secret_hash=secret_hash, name=name, created_at=now)
        .returning(AdminKey.id)
    ).scalar_one()


def find_admin_key(conn: Connection, prefix: str) -> AdminKeyRow | None:
    row = conn.execute(select(AdminKey).where(AdminKey.prefix == prefix)).first()
    if row is None:
        return None
    return _row(row)


def list_admin_keys(conn: Connection) -> list[AdminKeyRow]:
    """Every admin key, revoked ones included, oldest first."""
    return [_row(row) for row in conn.execute(select(AdminKey).order_by(AdminKey.id))]


def revoke_admin_key(conn: Connection, prefix: str, now: datetime) -> bool:
    """False when no active key has this prefix."""
    active = (AdminKey.prefix == prefix) & AdminKey.revoked_at.is_(None)
    done = conn.execute(update(AdminKey).where(active).values(revoked_at=now))
    return done.rowcount == 1


def _row(row: Any) -> AdminKeyRow:
    return AdminKeyRow(row.id, row.prefix, row.secret_hash, row.name, row.created_at, row.revoked_at)
