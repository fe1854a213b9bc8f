"""Platform-operator keys: the credential of `/v1/admin/…` endpoints, separate from account API keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select

from estafeta.store.models import AdminKey


@dataclass(frozen=True)
class AdminKeyRow:
    id: int
    prefix: str
    secret_hash: str
    name: str
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
    return AdminKeyRow(row.id, row.prefix, row.secret_hash, row.name, row.revoked_at)
