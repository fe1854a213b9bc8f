"""Cached settings kept right on every node: a writer announces what changed, every node forgets it.

Services cache what they read on every request (stream settings, source pools, verified API keys and relay
logins). The service that writes announces the change (`announce`): this process forgets it at once, and
on PostgreSQL a `NOTIFY` reaches every node listening (`run`, a `LISTEN` on a connection of its own), so
no node serves the old value once the change is committed. Caches also age out after
`cluster.cache_seconds`, which bounds what a node sees while it cannot listen (SQLite, whose processes
share one machine; a dropped connection, after which everything is forgotten anyway).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import psycopg

from estafeta.store import changes as store
from estafeta.store.db import Database

log = logging.getLogger("estafeta.changes")

RECONNECT_DELAY = 1.0


class Changes:
    def __init__(self, db: Database, cache_seconds: float) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self._versions: Counter[str] = Counter()
        self._epoch = 0  # bumped when every topic must be forgotten (listening started again)
        self.listening = asyncio.Event()

    def version(self, topic: str) -> tuple[int, int]:
        return self._epoch, self._versions[topic]

    def watch(self, topic: str) -> Watch:
        return Watch(self, topic)

    async def announce(self, topic: str) -> None:
        """`topic` changed (committed): forget it here now, and on every other node (PostgreSQL)."""
        self._versions[topic] += 1
        await self.db.run(store.announce, topic)

    async def run(self) -> None:
        """Listen for other nodes' announcements until cancelled (PostgreSQL; nothing to hear on SQLite)."""
        url = self.db.libpq_url
        if url is None:
            return
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {store.CHANNEL}")
                    self._epoch += 1  # what was announced while nobody listened is forgotten too
                    self.listening.set()
                    async for note in conn.notifies():
                        self._versions[note.payload] += 1
            except (psycopg.Error, OSError) as exc:
                log.error("not hearing other nodes' setting changes (caches age out meanwhile): %s", exc)
            finally:
                self.listening.clear()
            await asyncio.sleep(RECONNECT_DELAY)


class Watch:
    """Tells one cache when to forget: `topic` changed on any node, or `cache_seconds` went by."""

    def __init__(self, changes: Changes, topic: str) -> None:
        self.changes = changes
        self.topic = topic
        self._seen = changes.version(topic)
        self._since = time.monotonic()

    def stale(self) -> bool:
        """Whether the cache must be forgotten now; it counts as fresh again from this call on."""
        now = time.monotonic()
        current = self.changes.version(self.topic)
        if current == self._seen and now - self._since < self.changes.cache_seconds:
            return False
        self._seen, self._since = current, now
        return True
