"""Accounts: labels for rows that name accounts read only the accounts asked for."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, insert

from estafeta.accounts import Accounts
from estafeta.clock import ManualClock
from estafeta.store.accounts import create_account
from estafeta.store.db import Database
from estafeta.store.models import Account

NOW = datetime(2026, 12, 1, 5, tzinfo=UTC)


async def test_names_are_those_of_the_accounts_asked_for_however_many(db: Database) -> None:
    def many(conn: Connection) -> list[int]:
        conn.execute(
            insert(Account), [{"name": f"a{i}", "status": "active", "created_at": NOW} for i in range(1200)]
        )
        return [create_account(conn, "acme", NOW).id, create_account(conn, "other", NOW).id]

    acme, other = db.call(many)
    accounts = Accounts(db, ManualClock(NOW))
    assert await accounts.names([acme, None, acme, 999_999]) == {acme: "acme"}
    assert await accounts.names([]) == {}
    everyone = await accounts.names(range(1, other + 1))  # more than one chunk of bound parameters
    assert len(everyone) == 1202 and everyone[other] == "other"
