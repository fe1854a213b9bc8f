"""SMTP credentials: a generated username and password per credential, the password kept as an argon2 hash.

Mail clients log in on every connection and argon2 is deliberately slow, so a successful login is remembered
in memory for a minute under a SHA-256 of username and password (never the password itself). A revocation
is announced (`estafeta.changes`): every node forgets its remembered logins once it is committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import string
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from estafeta.audit import Actor, record
from estafeta.auth import hash_secret, verify_secret
from estafeta.changes import Changes
from estafeta.clock import Clock
from estafeta.store import smtp_credentials as store
from estafeta.store.db import Database

CACHE_TTL = timedelta(seconds=60)
# Letters and digits only: printers and CRMs have picky password fields, and a leading "-" trips up
# command-line clients. 32 of 62 symbols is about 190 bits.
_PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 32
USERNAME_MAX = 64
_CACHE_PRUNE_SIZE = 1024


@dataclass(frozen=True)
class NewSmtpCredential:
    username: str
    password: str  # shown once
    created_at: datetime


def _digest(username: str, password: str) -> str:
    return hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()


@dataclass(frozen=True)
class _Verified:
    account_id: int
    username: str
    expires: datetime


class SmtpCredentials:
    """An account's relay logins: created here (the password is shown once), checked on every AUTH."""

    def __init__(self, db: Database, clock: Clock, changes: Changes) -> None:
        self.db = db
        self.clock = clock
        self.changes = changes
        self._cache: dict[str, _Verified] = {}
        self._watch = changes.watch("smtp-credentials")

    async def create(self, account_id: int, *, actor: Actor) -> NewSmtpCredential:
        """Generate and store a credential for the account; the password is returned once, never stored."""
        now = self.clock.now()
        username = f"smtp_{secrets.token_hex(8)}"
        password = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))
        secret_hash = await asyncio.to_thread(hash_secret, password)

        def work(conn: Connection) -> None:
            store.add_credential(conn, account_id, username, secret_hash, now)
            record(conn, actor, "smtp_credential.create", at=now, account_id=account_id, target=username)

        await self.db.run(work)
        return NewSmtpCredential(username, password, now)

    async def list(self, account_id: int) -> list[store.SmtpCredentialRow]:
        return await self.db.run(store.list_credentials, account_id)

    async def account_for(self, username: str, password: str) -> int | None:
        """The account a username/password belongs to, or None for unknown, revoked or wrong ones."""
        now = self.clock.now()
        digest = _digest(username, password)
        if self._watch.stale():
            self._cache.clear()
        hit = self._cache.get(digest)
        if hit is not None and hit.expires > now:
            return hit.account_id
        # A name no credential can have (usernames are short and printable) is never looked up.
        plausible = len(username) <= USERNAME_MAX and username.isprintable()
        row = await self.db.run(store.find_credential, username) if plausible else None
        # Unknown and revoked usernames are refused after an argon2 check all the same: a failure takes as
        # long whether the username exists or not, so timing does not tell which ones do.
        stored = row.secret_hash if row is not None and row.revoked_at is None else None
        if not await asyncio.to_thread(verify_secret, stored, password) or row is None:
            return None
        if len(self._cache) >= _CACHE_PRUNE_SIZE:
            self._cache = {k: v for k, v in self._cache.items() if v.expires > now}
        self._cache[digest] = _Verified(row.account_id, username, now + CACHE_TTL)
        return row.account_id

    async def refuse(self) -> None:
        """Refuse a login that cannot match any credential, taking as long as refusing a wrong password."""
        await asyncio.to_thread(verify_secret, None, "")

    async def revoke(self, account_id: int, username: str, *, actor: Actor) -> bool:
        """Revoke the account's credential; every node forgets its remembered logins once that is
        committed. False when the account has no such credential."""
        now = self.clock.now()

        def work(conn: Connection) -> bool:
            done = store.revoke_credential(conn, account_id, username, now)
            if done:
                record(conn, actor, "smtp_credential.revoke", at=now, account_id=account_id, target=username)
            return done

        revoked = await self.db.run(work)
        if revoked:
            await self.forget([username])
        return revoked

    async def forget(self, usernames: Collection[str]) -> None:
        """These credentials were revoked (here or elsewhere in the core): every node forgets its
        remembered logins (`estafeta.changes`)."""
        if usernames:
            await self.changes.announce("smtp-credentials")
