"""Credentials: API keys `est_<prefix>_<secret>` and operator keys `estadm_<prefix>_<secret>`; only an
argon2 hash of the secret is stored.

An API key has a scope: `send` (send messages and campaigns only), `read` (read only) or `full`
(everything, its own keys, domains and webhooks included); `SCOPES` says which scopes satisfy each need.

Verifying argon2 is deliberately slow, so a successful check is remembered in memory for a few minutes
under a SHA-256 of the full key (never the key itself); revocation takes effect when that entry ages out.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection

from estafeta.audit import Actor, record
from estafeta.changes import Changes
from estafeta.clock import Clock
from estafeta.store import accounts as store
from estafeta.store import admin_keys as admin_store
from estafeta.store.db import Database

_HASHER = PasswordHasher()
CACHE_SECONDS = 60.0
ADMIN_KIND = "estadm"
Scope = Literal["send", "read", "full"]
SCOPES: dict[str, frozenset[str]] = {
    "send": frozenset({"send", "full"}),
    "read": frozenset({"read", "full"}),
    "full": frozenset({"full"}),
}
"""For each need, the key scopes that satisfy it."""


@dataclass(frozen=True)
class NewKey:
    token: str  # shown once
    prefix: str


@dataclass(frozen=True)
class Grant:
    """What a valid API key allows: its account, and its scope; `prefix` names it in audit rows."""

    account_id: int
    prefix: str
    scope: str

    def allows(self, need: str) -> bool:
        return self.scope in SCOPES[need]


def hash_secret(secret: str) -> str:
    return _HASHER.hash(secret)


def verify_secret(stored_hash: str | None, secret: str) -> bool:
    """Whether `secret` matches; with no hash (an unknown or revoked name) a stand-in hash is verified
    instead and False returned, so that the answer takes as long and reveals nothing about the name."""
    try:
        return _HASHER.verify(stored_hash or _stand_in_hash(), secret) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _stand_in_hash() -> str:
    return _HASHER.hash(secrets.token_urlsafe(24))


def _new_secret() -> tuple[str, str]:
    return secrets.token_hex(6), secrets.token_urlsafe(24)


def split_token(token: str, kind: str = "est") -> tuple[str, str] | None:
    """(prefix, secret) of a key of the given kind (`est` for accounts, `estadm` for operators)."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != kind or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class ApiKeys:
    """An account's API keys: created here (the token is shown once), checked on every request."""

    def __init__(self, db: Database, clock: Clock, changes: Changes) -> None:
        self.db = db
        self.clock = clock
        self.changes = changes
        self._cache: dict[str, tuple[Grant, float]] = {}  # digest → (grant, expiry)
        self._checking: dict[str, asyncio.Future[Grant | None]] = {}  # digest → check under way
        self._watch = changes.watch("api-keys")

    async def create(self, account_id: int, name: str = "", scope: Scope = "full", *, actor: Actor) -> NewKey:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; one of {', '.join(SCOPES)}")
        prefix, secret = _new_secret()
        secret_hash = await asyncio.to_thread(hash_secret, secret)
        now = self.clock.now()

        def work(conn: Connection) -> None:
            store.add_api_key(conn, account_id, prefix, secret_hash, name, scope, now)
            details = {"name": name, "scope": scope}
            record(
                conn, actor, "api_key.create", at=now, account_id=account_id, target=prefix, details=details
            )

        await self.db.run(work)
        return NewKey(f"est_{prefix}_{secret}", prefix)

    async def list(self, account_id: int) -> list[store.ApiKeyRow]:
        """The account's keys, revoked ones included (their secrets are never shown again)."""
        return await self.db.run(store.list_api_keys, account_id)

    async def revoke(self, account_id: int, prefix: str, *, actor: Actor) -> bool:
        """Revoke the account's key; every node forgets its cached checks once that is committed
        (`estafeta.changes`). False when the account has no such active key."""
        now = self.clock.now()

        def work(conn: Connection) -> bool:
            done = store.revoke_api_key(conn, account_id, prefix, now)
            if done:
                record(conn, actor, "api_key.revoke", at=now, account_id=account_id, target=prefix)
            return done

        revoked = await self.db.run(work)
        if revoked:
            await self.forget([prefix])
        return revoked

    async def forget(self, prefixes: Collection[str]) -> None:
        """These keys were revoked (here or elsewhere in the core): every node forgets its cached checks
        (`estafeta.changes`)."""
        if prefixes:
            await self.changes.announce("api-keys")

    async def account_for(self, token: str) -> int | None:
        """The account a key belongs to, or None for an unknown, revoked or mistyped key."""
        grant = await self.grant_for(token)
        return None if grant is None else grant.account_id

    async def grant_for(self, token: str) -> Grant | None:
        """The account and scope of a key, or None for an unknown, revoked or mistyped key."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        if self._watch.stale():
            self._cache.clear()
        hit = self._cache.get(digest)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        # Concurrent first requests with one key share one check rather than each hashing (a client
        # opening many connections at once would otherwise spend a core on argon2).
        checking = self._checking.get(digest)
        if checking is None:
            checking = self._checking[digest] = asyncio.ensure_future(self._check(digest, token))
            checking.add_done_callback(lambda _: self._checking.pop(digest, None))
        return await asyncio.shield(checking)  # a caller that goes away stops no one else's check

    async def _check(self, digest: str, token: str) -> Grant | None:
        parts = split_token(token)
        if parts is None:
            return None
        row = await self.db.run(store.find_api_key, parts[0])
        if row is None or row.revoked_at is not None:
            return None
        if not await asyncio.to_thread(verify_secret, row.secret_hash, parts[1]):  # slow by design
            return None
        grant = Grant(row.account_id, row.prefix, row.scope)
        self._cache[digest] = (grant, time.monotonic() + CACHE_SECONDS)
        return grant


class AdminKeys:
    """Platform-operator keys: created here (the token is shown once), checked like `ApiKeys`."""

    def __init__(self, db: Database, clock: Clock, changes: Changes) -> None:
        self.db = db
        self.clock = clock
        self.changes = changes
        self._cache: dict[str, tuple[str, float]] = {}
        self._watch = changes.watch("admin-keys")

    async def create(self, name: str = "", *, actor: Actor) -> NewKey:
        prefix, secret = _new_secret()
        secret_hash = await asyncio.to_thread(hash_secret, secret)
        now = self.clock.now()

        def work(conn: Connection) -> None:
            admin_store.add_admin_key(conn, prefix, secret_hash, name, now)
            record(conn, actor, "admin_key.create", at=now, target=prefix, details={"name": name})

        await self.db.run(work)
        return NewKey(f"{ADMIN_KIND}_{prefix}_{secret}", prefix)

    async def list(self) -> list[admin_store.AdminKeyRow]:
        """Every admin key, revoked ones included (their secrets are never shown again)."""
        return await self.db.run(admin_store.list_admin_keys)

    async def revoke(self, prefix: str, *, actor: Actor) -> bool:
        """Revoke an admin key; every node forgets its cached checks once that is committed
        (`estafeta.changes`). False when no active key has this prefix."""
        now = self.clock.now()

        def work(conn: Connection) -> bool:
            done = admin_store.revoke_admin_key(conn, prefix, now)
            if done:
                record(conn, actor, "admin_key.revoke", at=now, target=prefix)
            return done

        revoked = await self.db.run(work)
        if revoked:
            await self.changes.announce("admin-keys")
        return revoked

    async def prefix_for(self, token: str) -> str | None:
        """The key's prefix (it names the operator in audit rows), or None for anything but a valid key."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        if self._watch.stale():
            self._cache.clear()
        hit = self._cache.get(digest)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        parts = split_token(token, ADMIN_KIND)
        if parts is None:
            return None
        row = await self.db.run(admin_store.find_admin_key, parts[0])
        if row is None or row.revoked_at is not None:
            return None
        if not await asyncio.to_thread(verify_secret, row.secret_hash, parts[1]):
            return None
        self._cache[digest] = (row.prefix, time.monotonic() + CACHE_SECONDS)
        return row.prefix
