"""The supervisor of `estafeta serve`'s child processes: it starts them, passes wake-ups both ways, adds
up their counters, starts a child that died again, and stops them all (each finishing its work)."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from estafeta.config import Settings
from estafeta.metrics import CommitWindow, CounterTotals, Metrics
from estafeta.supervisor import Child, ChildKind, Inbox, Supervisor


class EchoWork:
    """Counts each wake-up as a delivered attempt and answers it with a wake-up of its own; counts its stop
    (under a label naming the grace it was given)."""

    def __init__(self, settings: Settings, mail_due: Callable[[], None]) -> None:
        self.mail_due = mail_due
        self.metrics = Metrics()

    async def start(self) -> None:
        """Nothing to start."""

    def wake(self) -> None:
        self.metrics.delivery_attempt(delivered=True, retry=False)
        self.mail_due()

    def report(self) -> tuple[CounterTotals, CommitWindow | None]:
        return self.metrics.counter_totals(), None

    async def stop(self, grace: float) -> None:
        self.metrics.webhook_attempts.labels(f"stopped {grace}").inc()


def echo_work(settings: Settings, mail_due: Callable[[], None], inbox: Inbox | None) -> EchoWork:
    return EchoWork(settings, mail_due)


class MarkingWork(EchoWork):
    """Starts by creating a file that another child waits for."""

    def __init__(self, marker: Path, settings: Settings, mail_due: Callable[[], None]) -> None:
        super().__init__(settings, mail_due)
        self.marker = marker

    async def start(self) -> None:
        self.marker.touch()


class WaitingWork(MarkingWork):
    """Starts only once another child has started (created the file), or fails to start."""

    async def start(self) -> None:
        deadline = time.monotonic() + 30
        while not self.marker.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the other child never started")
            await asyncio.sleep(0.05)


class BrokenWork(EchoWork):
    async def start(self) -> None:
        raise RuntimeError("cannot start")


def marking_work(
    marker: Path, settings: Settings, mail_due: Callable[[], None], inbox: Inbox | None
) -> MarkingWork:
    return MarkingWork(marker, settings, mail_due)


def waiting_work(
    marker: Path, settings: Settings, mail_due: Callable[[], None], inbox: Inbox | None
) -> WaitingWork:
    return WaitingWork(marker, settings, mail_due)


def broken_work(settings: Settings, mail_due: Callable[[], None], inbox: Inbox | None) -> BrokenWork:
    return BrokenWork(settings, mail_due)


async def _until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.05)


def _delivered(metrics: Metrics) -> float:
    return (
        metrics.registry.get_sample_value("estafeta_delivery_attempts_total", {"outcome": "delivered"}) or 0
    )


async def test_children_are_woken_counted_restarted_and_stopped(tmp_path: Path) -> None:
    metrics = Metrics()
    woken: list[float] = []
    supervisor = Supervisor(metrics, mail_due=lambda: woken.append(time.monotonic()))
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'unused.db'}")
    await supervisor.start(ChildKind("echo", echo_work, settings, 2))
    try:
        first, second = supervisor.children("echo")
        assert first.process.is_alive() and second.process.is_alive()

        supervisor.wake("echo")  # each child counts one attempt and wakes the supervisor back
        await _until(lambda: _delivered(metrics) == 2 and len(woken) >= 1)
        supervisor.wake("other")  # another kind's wake-up reaches none of these
        await asyncio.sleep(0.6)
        assert _delivered(metrics) == 2

        assert first.process.pid is not None
        os.kill(first.process.pid, signal.SIGKILL)

        def replaced() -> bool:
            children = supervisor.children("echo")
            return len(children) == 2 and first not in children and all(c.ready.done() for c in children)

        await _until(replaced)
        supervisor.wake("echo")  # the replacement counts from zero, added to what the dead one counted
        await _until(lambda: _delivered(metrics) == 4)
        running: list[Child] = supervisor.children("echo")
    finally:
        await supervisor.stop(grace=1.5)
    assert supervisor.children("echo") == []
    assert all(not child.process.is_alive() for child in [first, second, *running])
    # Both running children stopped cleanly, with that grace, and their last counts arrived.
    assert (
        metrics.registry.get_sample_value("estafeta_webhook_attempts_total", {"outcome": "stopped 1.5"}) == 2
    )


async def test_children_of_every_kind_start_together(tmp_path: Path) -> None:
    """The first kind's child starts only once the second kind's has: they are started at the same time, not
    one kind after the other."""
    supervisor = Supervisor(Metrics(), mail_due=lambda: None)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'unused.db'}")
    marker = tmp_path / "second started"
    await supervisor.start(
        ChildKind("first", functools.partial(waiting_work, marker), settings, 1),
        ChildKind("second", functools.partial(marking_work, marker), settings, 2),
    )
    try:
        assert len(supervisor.children("first")) == 1 and len(supervisor.children("second")) == 2
        assert all(c.ready.done() and c.process.is_alive() for c in supervisor.children("first"))
    finally:
        await supervisor.stop(grace=1.0)


async def test_a_kind_that_cannot_start_stops_the_others(tmp_path: Path) -> None:
    supervisor = Supervisor(Metrics(), mail_due=lambda: None)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'unused.db'}")
    try:
        await supervisor.start(
            ChildKind("echo", echo_work, settings, 2),
            ChildKind("broken", broken_work, settings, 1),
        )
    except RuntimeError as error:
        assert "broken process failed to start" in str(error)
    else:
        raise AssertionError("started although a child could not")
    assert supervisor.children("echo") == [] and supervisor.children("broken") == []
