"""What a delivery process runs (`delivery.processes` children of `estafeta serve`, under
`estafeta.supervisor`): a delivery engine on the serve process's database, woken when mail is queued;
leases keep engines in different processes from ever taking the same queue entry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from estafeta.config import Settings
from estafeta.core import Core
from estafeta.metrics import CommitWindow, CounterTotals

if TYPE_CHECKING:
    from estafeta.supervisor import Inbox


class DeliveryWork:
    """A delivery engine and the listener for other nodes' setting changes, in a child process."""

    def __init__(self, settings: Settings) -> None:
        self.core = Core(settings)
        self.engine = self.core.delivery_engine()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.core.changes.run(), name="changes"),
            asyncio.create_task(self.engine.run(), name="delivery"),
        ]

    def wake(self) -> None:
        self.engine.notify()

    def report(self) -> tuple[CounterTotals, CommitWindow | None]:
        return self.core.metrics.counter_totals(), self.engine.window.snapshot()

    async def stop(self, grace: float) -> None:
        """Attempts under way finish and their outcomes are committed; the rest is released."""
        changes, running = self._tasks
        await self.engine.stop(grace)
        await running
        changes.cancel()
        await asyncio.gather(changes, return_exceptions=True)
        await self.core.aclose()


def delivery_work(settings: Settings, mail_due: Callable[[], None], inbox: Inbox | None) -> DeliveryWork:
    """The supervisor's factory; mail this process makes due is its own engine's to deliver (it is handed
    no connections: no `inbox`)."""
    return DeliveryWork(settings)
