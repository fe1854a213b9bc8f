"""Periodic platform jobs (reputation reviews, notices): each runs once a minute under `estafeta serve`.

Jobs are plain coroutines that do one round of work, so tests call them directly with a manual clock.
A job that fails is logged and tried again on the next round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("estafeta.scheduler")

Job = Callable[[], Awaitable[object]]


class Scheduler:
    def __init__(self, jobs: dict[str, Job], interval: float = 60.0) -> None:
        self.jobs = jobs
        self.interval = interval

    async def run_once(self) -> None:
        for name, job in self.jobs.items():
            try:
                await job()
            except Exception:
                log.exception("scheduled job %s failed", name)

    async def run(self) -> None:
        """Run every job each `interval` seconds until cancelled."""
        while True:
            await self.run_once()
            await asyncio.sleep(self.interval)
