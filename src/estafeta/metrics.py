"""Prometheus metrics for operators (`/metrics`).

Counters count what this process did since it started (Prometheus adds up processes and restarts);
gauges of shared state (queue depth, webhook backlog) are read from the database at each scrape.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import Connection

from estafeta.store import queue as queue_store
from estafeta.store import webhooks as webhook_store
from estafeta.store.db import Database

CONTENT_TYPE = CONTENT_TYPE_LATEST
QUEUE_STATES = ("queued", "deferred", "delivered", "bounced", "suppressed")
OUTCOMES = ("delivered", "deferred", "bounced")  # of a delivery attempt


@dataclass(frozen=True)
class _Snapshot:
    queue: dict[str, int]
    webhooks: dict[str, int]
    fanout_lag: int


def _snapshot(conn: Connection) -> _Snapshot:
    return _Snapshot(
        queue_store.state_counts(conn), webhook_store.backlog(conn), webhook_store.fanout_lag(conn)
    )


class Metrics:
    """One registry per platform, so several platforms in one process (tests) keep apart."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.accepted_messages = Counter(
            "estafeta_accepted_messages", "Messages accepted, by way in", ["source"], registry=r
        )
        self.accepted_recipients = Counter(
            "estafeta_accepted_recipients", "Recipients queued by accepted messages", ["source"], registry=r
        )
        self.delivery_attempts = Counter(
            "estafeta_delivery_attempts", "SMTP delivery attempts, by outcome", ["outcome"], registry=r
        )
        self.webhook_attempts = Counter(
            "estafeta_webhook_attempts", "Webhook POSTs, by outcome", ["outcome"], registry=r
        )
        self.tracking_hits = Counter(
            "estafeta_tracking_hits", "Tracked opens and clicks", ["kind", "machine"], registry=r
        )
        self.queue_entries = Gauge(
            "estafeta_queue_entries", "Queue entries (one per recipient) by state", ["state"], registry=r
        )
        self.webhook_deliveries = Gauge(
            "estafeta_webhook_deliveries", "Webhook deliveries waiting or given up", ["state"], registry=r
        )
        self.webhook_fanout_lag = Gauge(
            "estafeta_webhook_fanout_lag_events", "Events not yet turned into webhook deliveries", registry=r
        )

    def delivery_attempt(self, delivered: bool, retry: bool) -> None:
        self.delivery_attempts.labels("delivered" if delivered else "deferred" if retry else "bounced").inc()

    async def render(self, db: Database) -> bytes:
        """The exposition text, with the shared gauges read fresh."""
        snapshot = await db.run(_snapshot)
        for state in {*QUEUE_STATES, *snapshot.queue}:
            self.queue_entries.labels(state).set(snapshot.queue.get(state, 0))
        for state, count in snapshot.webhooks.items():
            self.webhook_deliveries.labels(state).set(count)
        self.webhook_fanout_lag.set(snapshot.fanout_lag)
        return generate_latest(self.registry)
