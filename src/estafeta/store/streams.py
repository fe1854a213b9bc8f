"""Per-account stream settings: the From domain and the IP pool of the transactional and broadcast streams."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select

from estafeta.store.models import AccountStream


@dataclass(frozen=True)
class StreamRow:
    account_id: int
    stream: str
    from_domain: str
    ip_pool: str
    updated_at: datetime


def put(
    conn: Connection, account_id: int, stream: str, from_domain: str, ip_pool: str, now: datetime
) -> StreamRow:
    conn.execute(
        delete(AccountStream).where(AccountStream.account_id == account_id, AccountStream.stream == stream)
    )
    conn.execute(
        insert(AccountStream).values(
            account_id=account_id, stream=stream, from_domain=from_domain, ip_pool=ip_pool, updated_at=now
        )
    )
    return StreamRow(account_id, stream, from_domain, ip_pool, now)


def for_account(conn: Connection, account_id: int) -> dict[str, StreamRow]:
    rows = conn.execute(select(AccountStream).where(AccountStream.account_id == account_id)).all()
    return {r.stream: StreamRow(r.account_id, r.stream, r.from_domain, r.ip_pool, r.updated_at) for r in rows}


def pools(conn: Connection) -> dict[tuple[int, str], str]:
    """The IP pool chosen by each account for each stream (where one was chosen)."""
    rows = conn.execute(
        select(AccountStream.account_id, AccountStream.stream, AccountStream.ip_pool).where(
            AccountStream.ip_pool != ""
        )
    ).all()
    return {(r.account_id, r.stream): r.ip_pool for r in rows}
