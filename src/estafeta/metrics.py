"""Prometheus metrics for operators (`/metrics`).

Counters count what this process and its child processes did since it started (children report theirs:
`estafeta.supervisor`; Prometheus adds up nodes and restarts);
gauges of shared state (queue depth, webhook backlog) are read from the database at each scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy import Connection

from estafeta.store import queue as queue_store
from estafeta.store import webhooks as webhook_store
from estafeta.store.db import Database

CONTENT_TYPE = CONTENT_TYPE_LATEST
QUEUE_STATES = ("queued", "deferred", "delivered", "bounced", "suppressed")
OUTCOMES = ("delivered", "deferred", "bounced")  # of a delivery attempt
# Counter samples by (sample name, label pairs): what a child process reports of its own counters.
CounterTotals = dict[tuple[str, tuple[tuple[str, str], ...]], float]
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class CommitWindow:
    """What a crash could send twice: deliveries a receiver acknowledged whose outcome is not committed
    yet (now, and at most so far), and the time from each reply to its commit (a histogram over
    `COMMIT_BUCKETS`, the last count above them all). One per delivery engine; children's are added up."""

    uncommitted: int = 0
    peak: int = 0
    counts: list[int] = field(default_factory=lambda: [0] * (len(COMMIT_BUCKETS) + 1))
    seconds: float = 0.0

    def acknowledged(self) -> None:
        self.uncommitted += 1
        self.peak = max(self.peak, self.uncommitted)

    def committed(self, seconds: float, acknowledged: bool) -> None:
        """An outcome was committed `seconds` after its reply; `acknowledged`: it was a delivery."""
        if acknowledged:
            self.uncommitted -= 1
        self.seconds += seconds
        self.counts[next((i for i, b in enumerate(COMMIT_BUCKETS) if seconds <= b), len(COMMIT_BUCKETS))] += 1

    def snapshot(self) -> CommitWindow:
        return replace(self, counts=list(self.counts))

    @staticmethod
    def total(windows: Iterable[CommitWindow]) -> CommitWindow:
        out = CommitWindow()
        for w in windows:
            out.uncommitted += w.uncommitted
            out.peak = max(out.peak, w.peak)
            out.counts = [a + b for a, b in zip(out.counts, w.counts, strict=True)]
            out.seconds += w.seconds
        return out


class _CommitWindowCollector(Collector):
    """Exposes the sum of every registered engine's `CommitWindow` at each scrape."""

    def __init__(self, sources: list[Callable[[], CommitWindow]]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        total = CommitWindow.total(source() for source in self.sources)
        yield GaugeMetricFamily(
            "estafeta_delivery_acknowledged_uncommitted",
            "Deliveries a receiver acknowledged whose outcome is not committed yet (a crash now would send "
            "them again)",
            value=total.uncommitted,
        )
        yield GaugeMetricFamily(
            "estafeta_delivery_acknowledged_uncommitted_peak",
            "Most acknowledged deliveries uncommitted at once since the delivery processes started",
            value=total.peak,
        )
        cumulative, buckets = 0, []
        for bound, count in zip((*COMMIT_BUCKETS, float("inf")), total.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
        yield HistogramMetricFamily(
            "estafeta_delivery_reply_to_commit_seconds",
            "Time from a receiver's reply to the commit of the attempt's outcome",
            buckets=buckets,
            sum_value=total.seconds,
        )


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
        self._counters = {
            counter._name: counter  # prometheus_client's name for it, without _total
            for counter in (
                self.accepted_messages,
                self.accepted_recipients,
                self.delivery_attempts,
                self.webhook_attempts,
                self.tracking_hits,
            )
        }
        # Delivery engines (here, and children reported by the front) add theirs.
        self.commit_windows: list[Callable[[], CommitWindow]] = []
        r.register(_CommitWindowCollector(self.commit_windows))

    def counter_totals(self) -> CounterTotals:
        """Every counter's samples, for a child process to report to the serve process."""
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for counter in self._counters.values()
            for family in counter.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        }

    def add_counts(self, counts: CounterTotals) -> None:
        """Add what a child process counted (`counter_totals` differences) to this process's counters."""
        for (name, labels), amount in counts.items():
            if amount > 0:
                counter = self._counters[name.removesuffix("_total")]
                (counter.labels(**dict(labels)) if labels else counter).inc(amount)

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
