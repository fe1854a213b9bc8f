"""The receivers' ledger: every SMTP session and every DATA a provider acknowledged, with when.

A sender that crashes may send again what it had sent but not yet recorded. Only the receiving side
knows, independently of the sender, what was on the wire at a given instant: the ledger lets crash tests
say which deliveries were in flight at each kill, and so which copies a receiver may see twice.

Times are `time.monotonic()` seconds, which on Linux is one clock for every process on the machine, so
a test can compare them with the moment it killed the sender.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Acknowledged:
    """One DATA a provider answered with 250."""

    provider: str
    session: int
    recipients: tuple[str, ...]
    began: float  # MAIL FROM received
    acked: float  # 250 given


@dataclass(frozen=True)
class Span:
    """One SMTP session: from the connection to its end (None: still open)."""

    session: int
    opened: float
    closed: float | None
    provider: str = ""


@dataclass(frozen=True)
class LedgerView:
    """A snapshot of the ledger, for questions asked after the fact."""

    acknowledged: tuple[Acknowledged, ...]
    sessions: dict[int, Span]

    def copies(self) -> dict[str, list[Acknowledged]]:
        """Every acknowledged copy per recipient, oldest first."""
        out: dict[str, list[Acknowledged]] = {}
        for ack in self.acknowledged:
            for recipient in ack.recipients:
                out.setdefault(recipient, []).append(ack)
        return out

    def most_sessions(self, provider: str) -> int:
        """The most sessions `provider` had open at once (a session ending as another begins counts once)."""
        changes = sorted(
            (moment, step)
            for span in self.sessions.values()
            if span.provider == provider
            for moment, step in ((span.opened, 1), (span.closed, -1))
            if moment is not None
        )
        most = now = 0
        for _, step in changes:
            now += step
            most = max(most, now)
        return most

    def most_acknowledged(self, provider: str, seconds: float) -> int:
        """The most messages `provider` acknowledged within any `seconds`-long window."""
        times = sorted(ack.acked for ack in self.acknowledged if ack.provider == provider)
        most = start = 0
        for end, moment in enumerate(times):
            while moment - times[start] > seconds:
                start += 1
            most = max(most, end - start + 1)
        return most

    def in_flight(self, at: float) -> list[Acknowledged]:
        """The deliveries a sender killed at `at` may not have recorded: on each session still open then,
        the latest transaction begun before it (answered or not yet). A sender that records an outcome
        before it starts the next transaction on the same connection has at most these unrecorded."""
        latest: dict[int, Acknowledged] = {}
        for ack in self.acknowledged:
            if ack.began > at:
                continue
            span = self.sessions.get(ack.session)
            if span is None or span.opened > at or (span.closed is not None and span.closed < at):
                continue
            if ack.session not in latest or ack.began > latest[ack.session].began:
                latest[ack.session] = ack
        return list(latest.values())


class Ledger:
    """Thread-safe record kept by the providers' SMTP sessions (oldest dropped past `capacity`)."""

    def __init__(self, capacity: int) -> None:
        self._lock = threading.Lock()
        self._capacity = capacity
        self._acknowledged: deque[Acknowledged] = deque(maxlen=capacity)
        self._sessions: OrderedDict[int, Span] = OrderedDict()
        self._next = 0

    def opened(self, provider: str = "") -> int:
        """A connection came in (to `provider`); returns its session number."""
        with self._lock:
            self._next += 1
            self._sessions[self._next] = Span(self._next, time.monotonic(), None, provider)
            while len(self._sessions) > self._capacity:
                self._sessions.popitem(last=False)
            return self._next

    def closed(self, session: int) -> None:
        with self._lock:
            span = self._sessions.get(session)
            if span is not None:
                self._sessions[session] = Span(session, span.opened, time.monotonic(), span.provider)

    def acknowledged(self, provider: str, session: int, recipients: list[str], began: float) -> None:
        with self._lock:
            self._acknowledged.append(
                Acknowledged(provider, session, tuple(recipients), began, time.monotonic())
            )

    def __len__(self) -> int:
        """How many DATA were acknowledged (cheap: for polling while mail flows)."""
        with self._lock:
            return len(self._acknowledged)

    def view(self) -> LedgerView:
        with self._lock:
            return LedgerView(tuple(self._acknowledged), dict(self._sessions))

    def reset(self) -> None:
        with self._lock:
            self._acknowledged.clear()
            self._sessions.clear()
