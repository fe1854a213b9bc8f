"""Credentials: API keys `est_<prefix>_<secret>` and operator keys `estadm_<prefix>_<secret>`; only an
argon2 hash of the secret is stored.

Verifying argon2 is deliberately slow, so a successful check is remembered in memory for a few minutes
under a SHA-256 of the full key (never the key itself); revocation takes effect when that entry ages out.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from estafeta.store import accounts as store
from estafeta.store import admin_keys as admin_store
from estafeta.store.db import Database

_HASHER = PasswordHasher()
CACHE_SECONDS = 60.0
ADMIN_KIND = "estadm"


@dataclass(frozen=True)
class NewKey:
    token: str  # shown once
    prefix: str


def hash_secret(secret: str) -> str:
    return _HASHER.hash(secret)


def verify_secret(stored_hash: str, secret: str) -> bool:
    try:
        return _HASHER.verify(stored_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


def create_api_key(db: Database, account_id: int, name: str, now: datetime) -> NewKey:
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)
    db.call(store.add_api_key, account_id, prefix, hash_secret(secret), name, now)
    return NewKey(f"est_{prefix}_{secret}", prefix)


def create_admin_key(db: Database, name: str, now: datetime) -> NewKey:
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)
    db.call(admin_store.add_admin_key, prefix, hash_secret(secret), name, now)
    return NewKey(f"{ADMIN_KIND}_{prefix}_{secret}", prefix)


def split_token(token: str, kind: str = "est") -> tuple[str, str] | None:
    """(prefix, secret) of a key of the given kind (`est` for accounts, `estadm` for operators)."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != kind or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class ApiKeyVerifier:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[int, float]] = {}

    async def account_for(self, token: str) -> int | None:
        """The account a key belongs to, or None for an unknown, revoked or mistyped key."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        hit = self._cache.get(digest)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        parts = split_token(token)
        if parts is None:
            return None
        row = await self.db.run(store.find_api_key, parts[0])
        if row is None or row.revoked_at is not None:
            return None
        if not await asyncio.to_thread(verify_secret, row.secret_hash, parts[1]):  # slow by design
            return None
        self._cache[digest] = (row.account_id, time.monotonic() + CACHE_SECONDS)
        return row.account_id


class AdminKeyVerifier:
    """Checks operator keys, remembering successes like `ApiKeyVerifier`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[str, float]] = {}

    async def prefix_for(self, token: str) -> str | None:
        """The key's prefix (it names the operator in audit rows), or None for anything but a valid key."""
        digest = hashlib.sha256(token.encode()).hexdigest()
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
