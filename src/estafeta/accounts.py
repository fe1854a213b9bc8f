"""Accounts: the senders that own domains, keys, lists and mail.

A natural home for what an account carries beyond its name (plans and quotas, users): the core's
`accounts` service is the only writer.
"""

from __future__ import annotations

from collections.abc import Iterable

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Connection

from estafeta.audit import Actor, record
from estafeta.clock import Clock
from estafeta.ids import parse_id
from estafeta.store import accounts as store
from estafeta.store import reputation as reputation_store
from estafeta.store.db import Database

AccountRow = store.AccountRow


class AccountError(ValueError):
    """An account request that cannot be carried out; the message says why."""


def contact_address(value: str) -> str:
    """A contact address for reputation notices, normalised; `AccountError` when it is not one."""
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise AccountError(f"not a valid contact address: {exc}") from exc


class Accounts:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def create(self, name: str, email: str | None = None, *, actor: Actor) -> store.AccountRow:
        """A new account; `email` (checked and normalised) receives its reputation notices."""
        if email is not None:
            email = contact_address(email)
        if not name.strip():
            raise AccountError("an account needs a name")
        if await self.db.run(store.find_account, name) is not None:
            raise AccountError(f"an account named {name!r} exists already")
        now = self.clock.now()

        def work(conn: Connection) -> store.AccountRow:
            row = store.create_account(conn, name, now)
            if email is not None:
                reputation_store.set_contact(conn, row.id, email)
            details = {"name": name, "contact": email}
            record(conn, actor, "account.create", at=now, account_id=row.id, target=name, details=details)
            return row

        return await self.db.run(work)

    async def get(self, account_id: int) -> store.AccountRow | None:
        return await self.db.run(store.get_account, account_id)

    async def find(self, name: str) -> store.AccountRow | None:
        return await self.db.run(store.find_account, name)

    async def resolve(self, name_or_id: str) -> store.AccountRow:
        """The account named (or numbered) on a command line; `AccountError` when there is none."""
        number = parse_id(name_or_id)
        row = await self.get(number) if number is not None else None
        row = row or await self.find(name_or_id)
        if row is None:
            raise AccountError(f"no account {name_or_id!r}; see `estafeta accounts list`")
        return row

    async def list(self) -> list[store.AccountRow]:
        return await self.db.run(store.list_accounts)

    async def names(self, account_ids: Iterable[int | None]) -> dict[int, str]:
        """Names to label rows that name accounts (None skipped): only these accounts are read, however
        many the platform has."""
        wanted = {i for i in account_ids if i is not None}
        return await self.db.run(store.account_names, wanted) if wanted else {}
