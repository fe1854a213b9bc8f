"""Cached settings across nodes: a change announced on one node is forgotten by every node listening
(PostgreSQL LISTEN/NOTIFY), and without listening caches still age out."""

from __future__ import annotations

import asyncio
import time

from estafeta.audit import SYSTEM
from estafeta.changes import Changes
from estafeta.config import Settings
from estafeta.core import Core
from estafeta.store.db import Database


async def test_a_stream_change_on_one_node_reaches_the_others_at_once(pg_url: str) -> None:
    settings = Settings(database_url=pg_url, cluster={"cache_seconds": 3600})
    first, second = Core(settings), Core(settings)
    listening = asyncio.create_task(second.changes.run())
    try:
        await asyncio.wait_for(second.changes.listening.wait(), 10)
        account = await first.accounts.create("acme", actor=SYSTEM)
        await first.domains.add(account.id, "acme.test", actor=SYSTEM)
        assert await second.streams.from_domain(account.id, "transactional") is None  # cached there now
        await first.streams.put(account.id, "transactional", "acme.test", "", actor=SYSTEM)
        assert await first.streams.from_domain(account.id, "transactional") == "acme.test"

        async def seen() -> bool:
            return await second.streams.from_domain(account.id, "transactional") == "acme.test"

        deadline = time.monotonic() + 5
        while not await seen():
            assert time.monotonic() < deadline, "the other node kept serving the old stream setting"
            await asyncio.sleep(0.02)
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await first.aclose()
        await second.aclose()


async def test_a_revoked_admin_key_is_refused_by_every_node(pg_url: str) -> None:
    settings = Settings(database_url=pg_url, cluster={"cache_seconds": 3600})
    first, second = Core(settings), Core(settings)
    listening = asyncio.create_task(second.changes.run())
    try:
        await asyncio.wait_for(second.changes.listening.wait(), 10)
        key = await first.admin_keys.create("oncall", actor=SYSTEM)
        assert await second.admin_keys.prefix_for(key.token) == key.prefix  # remembered there
        assert await first.admin_keys.revoke(key.prefix, actor=SYSTEM)
        assert await first.admin_keys.prefix_for(key.token) is None  # this node forgets at once
        assert not await first.admin_keys.revoke(key.prefix, actor=SYSTEM)
        deadline = time.monotonic() + 5
        while await second.admin_keys.prefix_for(key.token) is not None:
            assert time.monotonic() < deadline, "the other node kept accepting a revoked admin key"
            await asyncio.sleep(0.02)
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await first.aclose()
        await second.aclose()


async def test_a_revoked_key_is_refused_by_every_node(pg_url: str) -> None:
    settings = Settings(database_url=pg_url, cluster={"cache_seconds": 3600})
    first, second = Core(settings), Core(settings)
    listening = asyncio.create_task(second.changes.run())
    try:
        await asyncio.wait_for(second.changes.listening.wait(), 10)
        account = await first.accounts.create("acme", actor=SYSTEM)
        key = await first.api_keys.create(account.id, actor=SYSTEM)
        assert await second.api_keys.account_for(key.token) == account.id  # remembered there
        assert await first.api_keys.revoke(account.id, key.prefix, actor=SYSTEM)
        deadline = time.monotonic() + 5
        while await second.api_keys.account_for(key.token) is not None:
            assert time.monotonic() < deadline, "the other node kept accepting a revoked key"
            await asyncio.sleep(0.02)
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await first.aclose()
        await second.aclose()


def test_without_announcements_a_watch_goes_stale_after_cache_seconds(db: Database) -> None:
    changes = Changes(db, cache_seconds=0.05)
    watch = changes.watch("streams")
    assert not watch.stale()
    time.sleep(0.06)
    assert watch.stale()
    assert not watch.stale()  # fresh again once told


async def test_an_announcement_makes_this_nodes_watches_stale_at_once(db: Database) -> None:
    changes = Changes(db, cache_seconds=3600)
    watch, other = changes.watch("streams"), changes.watch("api-keys")
    await changes.announce("streams")
    assert watch.stale() and not other.stale()
