"""An account's two streams, transactional and broadcast: each with its own From domain and, optionally, its
own source-IP pool.

`Streams` is the only writer of these settings and owns the caches that read them: the accept path's From
domains and delivery's source pools (`estafeta.delivery.pools`). A change is announced
(`estafeta.changes`), so every node forgets both caches once it is committed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from estafeta import plans
from estafeta.audit import Actor, record
from estafeta.changes import Changes
from estafeta.clock import Clock
from estafeta.config import Settings
from estafeta.delivery.pools import SourcePools
from estafeta.store import accounts as account_store
from estafeta.store import streams as store
from estafeta.store.db import Database

StreamRow = store.StreamRow

NAMES = ("transactional", "broadcast")
TOPIC = "streams"


class StreamError(ValueError):
    """A stream setting that cannot be used: `field` names the input, `detail` says why in full, `reason`
    in short, `status` is the HTTP answer."""

    def __init__(self, field: str, detail: str, reason: str, status: int = 422) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail
        self.reason = reason
        self.status = status


class Streams:
    def __init__(self, db: Database, settings: Settings, clock: Clock, changes: Changes) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.changes = changes
        self.sources = SourcePools(db, settings.ip_pools, changes.watch(TOPIC))
        self._rows: dict[int, dict[str, store.StreamRow]] = {}
        self._watch = changes.watch(TOPIC)

    async def for_account(self, account_id: int) -> dict[str, store.StreamRow]:
        """The streams the account configured, as stored now (a stream never set is missing)."""
        return await self.db.run(store.for_account, account_id)

    async def from_domain(self, account_id: int, stream: str) -> str | None:
        """The From domain the account set for a stream, if it set one (cached for the accept path)."""
        if self._watch.stale():
            self._rows.clear()
        rows = self._rows.get(account_id)
        if rows is None:
            rows = self._rows[account_id] = await self.for_account(account_id)
        row = rows.get(stream)
        return row.from_domain if row is not None and row.from_domain else None

    async def put(
        self, account_id: int, stream: str, from_domain: str, ip_pool: str, *, actor: Actor
    ) -> store.StreamRow:
        """Set a stream's From domain (one of the account's sending domains, not the other stream's) and IP
        pool (one of `settings.ip_pools`); empty values mean any domain and the default pool."""
        domain = from_domain.strip().lower().rstrip(".")
        if domain:
            row = await self.db.run(account_store.find_domain, domain)
            if row is None or row.account_id != account_id:
                raise StreamError(
                    "from_domain",
                    f"{domain} is not a sending domain of this account",
                    "not a sending domain of this account",
                )
            other = (await self.for_account(account_id)).get(
                "broadcast" if stream == "transactional" else "transactional"
            )
            if other is not None and other.from_domain == domain:
                raise StreamError(
                    "from_domain",
                    f"{domain} is the {other.stream} stream's; each stream needs its own",
                    f"used by the {other.stream} stream",
                    409,
                )
        if ip_pool and ip_pool not in self.settings.ip_pools:
            known = ", ".join(sorted(self.settings.ip_pools)) or "none configured"
            raise StreamError("ip_pool", f"no pool {ip_pool!r} (known: {known})", "unknown pool")
        try:
            await self.db.run(plans.check_pool, account_id, ip_pool)
        except plans.PlanError as exc:
            raise StreamError("ip_pool", str(exc), "not in the account's plan", 403) from exc
        now: datetime = self.clock.now()

        def work(conn: Connection) -> store.StreamRow:
            row = store.put(conn, account_id, stream, domain, ip_pool, now)
            details = {"from_domain": domain or None, "ip_pool": ip_pool or None}
            record(
                conn, actor, "stream.settings", at=now, account_id=account_id, target=stream, details=details
            )
            return row

        row = await self.db.run(work)
        await self.changes.announce(TOPIC)
        return row
