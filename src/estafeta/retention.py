"""The scheduler's pruning job (settings `retention`): keeps the database from growing without end.

A message's body is the bulk of what is stored and nothing reads it once every recipient is final, so it
goes first (30 days by default; a message still waiting at that age, held for review or queued in a paused
stream, keeps it until it is final); finished webhook deliveries follow (30 days), and the event log, which
statistics and reputation windows read, is kept longest (400 days). Each kind is pruned in batches of
`retention.batch` rows, one transaction each, until nothing older is left or `MAX_ROUNDS` is reached (the
next run goes on), so neither the accept path nor delivery waits long for the database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Connection

from estafeta.clock import Clock
from estafeta.config import RetentionSettings
from estafeta.store import retention as store
from estafeta.store.db import Database

MAX_ROUNDS = 50

Pruner = Callable[[Connection, datetime, int], int]


class Retention:
    def __init__(self, db: Database, settings: RetentionSettings, clock: Clock) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock

    async def prune(self) -> dict[str, int]:
        """One run: how many rows of each kind were pruned (bodies: messages looked at; waited bodies: the
        messages still waiting when their bodies' turn came, looked at again)."""
        kinds: list[tuple[str, float, Pruner]] = [
            ("message_bodies", self.settings.message_bodies_days, store.prune_bodies),
            ("waited_bodies", self.settings.message_bodies_days, store.prune_waited_bodies),
            ("webhook_deliveries", self.settings.webhook_deliveries_days, store.prune_webhook_deliveries),
            ("events", self.settings.events_days, store.prune_events),
        ]
        done: dict[str, int] = {}
        for name, days, pruner in kinds:
            done[name] = 0
            if not days:
                continue
            before = self.clock.now() - timedelta(days=days)
            for _ in range(MAX_ROUNDS):
                pruned = await self.db.run(pruner, before, self.settings.batch)
                done[name] += pruned
                if pruned < self.settings.batch:
                    break
        return done
