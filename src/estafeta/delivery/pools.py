"""Source-IP pools: which local address a queue entry's connection leaves from.

An account may choose a pool (settings `ip_pools`) for each stream, so broadcast mail and transactional mail
build separate IP reputations. Without a choice, the pool named after the stream is used if it exists;
otherwise the system picks the address. Within a pool, entries spread over its addresses by id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from estafeta.changes import Watch
from estafeta.outcome import Job
from estafeta.store import streams as stream_store
from estafeta.store.db import Database

REFRESH_SECONDS = 30.0  # how stale stream changes may be seen without a watch on them


class NoSendingAddress(Exception):
    """No address of the pool may send now (none passes the reverse-DNS check)."""

    def __init__(self, pool: str) -> None:
        super().__init__(pool)
        self.pool = pool


class SourcePools:
    def __init__(
        self, db: Database, pools: Mapping[str, Sequence[object]], watch: Watch | None = None
    ) -> None:
        """`watch` says when the accounts' choices changed on any node (else they are read again every
        `REFRESH_SECONDS`)."""
        self.db = db
        self.watch = watch
        self.pools = {name: [str(address) for address in addresses] for name, addresses in pools.items()}
        self._chosen: dict[tuple[int, str], str] = {}
        self._loaded_at: float | None = None

    async def refresh(self) -> None:
        if not self.pools:
            return
        if self.watch is not None:
            stale = self.watch.stale()
        else:
            stale = self._loaded_at is not None and time.monotonic() - self._loaded_at > REFRESH_SECONDS
        if self._loaded_at is None or stale:
            self._chosen = await self.db.run(stream_store.pools)
            self._loaded_at = time.monotonic()

    def source_for(self, job: Job, usable: Callable[[str], bool] = lambda address: True) -> str | None:
        """The address to send `job` from (None: the system's), among the `usable` ones of its pool;
        raises NoSendingAddress when its pool has none usable."""
        pool = self._chosen.get((job.account_id, job.stream), job.stream)
        addresses = self.pools.get(pool)
        if not addresses:
            return None
        allowed = [address for address in addresses if usable(address)]
        if not allowed:
            raise NoSendingAddress(pool)
        return allowed[job.delivery_id % len(allowed)]
