"""Accounts, API keys, sending domains and platform-wide state."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from estafeta.store.dkim_keys import DkimKeyRow, keys_of
from estafeta.store.models import Account, ApiKey, Domain, PlatformState

_NAMES_CHUNK = 500


@dataclass(frozen=True)
class AccountRow:
    id: int
    name: str
    status: str
    created_at: datetime


@dataclass(frozen=True)
class ApiKeyRow:
    id: int
    account_id: int
    prefix: str
    secret_hash: str
    name: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class DomainRow:
    id: int
    account_id: int
    name: str
    created_at: datetime
    keys: tuple[DkimKeyRow, ...]  # every DKIM key, oldest first


def get_state(conn: Connection, key: str) -> str | None:
    return conn.scalar(select(PlatformState.value).where(PlatformState.key == key))


def set_state(conn: Connection, key: str, value: str) -> None:
    """Store `value` under `key`, replacing what was there (cursors of periodic jobs)."""
    if conn.execute(update(PlatformState).where(PlatformState.key == key).values(value=value)).rowcount == 0:
        conn.execute(insert(PlatformState).values(key=key, value=value))


def set_state_if_absent(conn: Connection, key: str, value: str) -> str:
    """Store `value` unless one is there already; returns the stored value (first writer wins)."""
    current = get_state(conn, key)
    if current is not None:
        return current
    conn.execute(insert(PlatformState).values(key=key, value=value))
    return value


def create_account(conn: Connection, name: str, now: datetime) -> AccountRow:
    new_id = conn.execute(
        insert(Account).values(name=name, status="active", created_at=now).returning(Account.id)
    ).scalar_one()
    return AccountRow(new_id, name, "active", now)


def get_account(conn: Connection, account_id: int) -> AccountRow | None:
    row = conn.execute(select(Account).where(Account.id == account_id)).first()
    return AccountRow(row.id, row.name, row.status, row.created_at) if row else None


def find_account(conn: Connection, name: str) -> AccountRow | None:
    row = conn.execute(select(Account).where(Account.name == name)).first()
    return AccountRow(row.id, row.name, row.status, row.created_at) if row else None


def list_accounts(conn: Connection) -> list[AccountRow]:
    rows = conn.execute(select(Account).order_by(Account.id)).all()
    return [AccountRow(r.id, r.name, r.status, r.created_at) for r in rows]


def account_names(conn: Connection, account_ids: Collection[int]) -> dict[int, str]:
    """The names of these accounts (those that exist), read in chunks that keep SQLite's bound-parameter
    limit far away."""
    wanted = sorted(set(account_ids))
    names: dict[int, str] = {}
    for start in range(0, len(wanted), _NAMES_CHUNK):
        chunk = wanted[start : start + _NAMES_CHUNK]
        rows = conn.execute(select(Account.id, Account.name).where(Account.id.in_(chunk)))
        names.update((row.id, row.name) for row in rows)
    return names


def add_api_key(
    conn: Connection, account_id: int, prefix: str, secret_hash: str, name: str, scope: str, now: datetime
) -> int:
    return conn.execute(
        insert(ApiKey)
        .values(
            account_id=account_id,
            prefix=prefix,
            secret_hash=secret_hash,
            name=name,
            scope=scope,
            created_at=now,
        )
        .returning(ApiKey.id)
    ).scalar_one()


def _api_key(row: Any) -> ApiKeyRow:
    return ApiKeyRow(
        row.id,
        row.account_id,
        row.prefix,
        row.secret_hash,
        row.name,
        row.scope,
        row.created_at,
        row.revoked_at,
    )


def find_api_key(conn: Connection, prefix: str) -> ApiKeyRow | None:
    """The key with this prefix, unless its account is terminated."""
    row = conn.execute(
        select(ApiKey)
        .join(Account, Account.id == ApiKey.account_id)
        .where(ApiKey.prefix == prefix, Account.status != "terminated")
    ).first()
    if row is None:
        return None
    return _api_key(row)


def list_api_keys(conn: Connection, account_id: int) -> list[ApiKeyRow]:
    rows = conn.execute(select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.id)).all()
    return [_api_key(r) for r in rows]


def revoke_api_key(conn: Connection, account_id: int, prefix: str, now: datetime) -> bool:
    result = conn.execute(
        update(ApiKey)
        .where(ApiKey.account_id == account_id, ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return result.rowcount == 1


def _domains(conn: Connection, rows: list[object]) -> list[DomainRow]:
    keys = keys_of(conn, (row.id for row in rows))  # type: ignore[attr-defined]
    return [
        DomainRow(
            row.id,  # type: ignore[attr-defined]
            row.account_id,  # type: ignore[attr-defined]
            row.name,  # type: ignore[attr-defined]
            row.created_at,  # type: ignore[attr-defined]
            tuple(keys.get(row.id, ())),  # type: ignore[attr-defined]
        )
        for row in rows
    ]


def add_domain(conn: Connection, account_id: int, name: str, now: datetime) -> DomainRow:
    new_id = conn.execute(
        insert(Domain).values(account_id=account_id, name=name, created_at=now).returning(Domain.id)
    ).scalar_one()
    return DomainRow(new_id, account_id, name, now, ())


def find_domain(conn: Connection, name: str) -> DomainRow | None:
    row = conn.execute(select(Domain).where(Domain.name == name)).first()
    return _domains(conn, [row])[0] if row else None


def list_domains(conn: Connection, account_id: int | None = None) -> list[DomainRow]:
    query = select(Domain).order_by(Domain.id)
    if account_id is not None:
        query = query.where(Domain.account_id == account_id)
    return _domains(conn, list(conn.execute(query).all()))
