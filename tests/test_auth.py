"""API key checks: concurrent first requests with one key share one argon2 verification."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from estafeta import auth
from estafeta.audit import SYSTEM
from estafeta.config import Settings
from estafeta.core import Core


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The secrets verified with argon2, in order (the real verification still runs)."""
    seen: list[str] = []
    real = auth.verify_secret

    def counted(stored_hash: str | None, secret: str) -> bool:
        seen.append(secret)
        return real(stored_hash, secret)

    monkeypatch.setattr(auth, "verify_secret", counted)
    yield seen


async def _core() -> Core:
    return Core(Settings(database_url=f"sqlite:///{Path(tempfile.mkdtemp()) / 'estafeta.db'}"))


async def test_concurrent_first_requests_share_one_verification(verifications: list[str]) -> None:
    core = await _core()
    try:
        account = await core.accounts.create("acme", actor=SYSTEM)
        key = await core.api_keys.create(account.id, actor=SYSTEM)
        grants = await asyncio.gather(*(core.api_keys.grant_for(key.token) for _ in range(8)))
        assert {g.account_id if g else None for g in grants} == {account.id}
        assert len(verifications) == 1
        assert await core.api_keys.account_for(key.token) == account.id  # remembered: no new check
        assert len(verifications) == 1
    finally:
        await core.aclose()


async def test_a_wrong_secret_is_refused_to_every_concurrent_request(verifications: list[str]) -> None:
    core = await _core()
    try:
        account = await core.accounts.create("acme", actor=SYSTEM)
        key = await core.api_keys.create(account.id, actor=SYSTEM)
        wrong = key.token[:-2] + ("xx" if not key.token.endswith("xx") else "yy")
        assert await asyncio.gather(*(core.api_keys.grant_for(wrong) for _ in range(4))) == [None] * 4
        assert len(verifications) == 1
        assert await core.api_keys.account_for(key.token) == account.id  # the right one still checks
    finally:
        await core.aclose()


async def test_a_caller_that_goes_away_stops_no_one_elses_check(verifications: list[str]) -> None:
    core = await _core()
    try:
        account = await core.accounts.create("acme", actor=SYSTEM)
        key = await core.api_keys.create(account.id, actor=SYSTEM)
        first = asyncio.create_task(core.api_keys.grant_for(key.token))
        second = asyncio.create_task(core.api_keys.grant_for(key.token))
        await asyncio.sleep(0)
        first.cancel()
        grant = await second
        assert grant is not None and grant.account_id == account.id
        assert len(verifications) == 1
    finally:
        await core.aclose()
