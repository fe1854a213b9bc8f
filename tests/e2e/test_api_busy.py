"""A SQLite database kept locked by another writer beyond `sqlite_busy_timeout`: the API answers 503 with
a problem body and Retry-After, stores nothing, and accepts the same request once the lock is released."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from estafeta.store import queue as queue_store
from estafeta.world import World
from tests.e2e.harness import Harness, start_harness


@pytest.fixture
async def impatient(fresh_world: World, tmp_path: Path) -> AsyncIterator[Harness]:
    h = await start_harness(fresh_world, f"sqlite:///{tmp_path / 'busy.db'}", sqlite_busy_timeout=0.3)
    yield h
    await h.client.aclose()
    await h.platform.stop(grace=2)


async def test_a_database_locked_too_long_answers_503_and_stores_nothing(
    impatient: Harness, tmp_path: Path
) -> None:
    message = {"from": "a@acme.test", "to": ["user@gmail.test"], "subject": "hi", "text": "hello"}
    other = sqlite3.connect(tmp_path / "busy.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing, for longer than the busy timeout
    try:
        refused = await impatient.client.post("/v1/messages", json=message)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "/problems/database-busy"
    assert await impatient.platform.core.db.run(queue_store.state_counts) == {}

    accepted = await impatient.client.post("/v1/messages", json=message)
    assert accepted.status_code == 202, accepted.text
    assert sum((await impatient.platform.core.db.run(queue_store.state_counts)).values()) == 1


async def test_delivery_keeps_claiming_after_the_database_was_busy(
    impatient: Harness, tmp_path: Path
) -> None:
    """A claim that cannot have SQLite's lock within the busy timeout is tried again; the delivery engine
    does not stop, so mail accepted afterwards is still delivered."""
    other = sqlite3.connect(tmp_path / "busy.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        for _ in range(4):  # the engine claims (and finds the lock taken) at least once meanwhile
            impatient.platform.wake_delivery()
            await asyncio.sleep(0.5)
    finally:
        other.execute("ROLLBACK")
        other.close()
    sent = await impatient.send(to=["user@gmail.test"])
    await impatient.wait_state(sent, "delivered")
