"""A lane never strands a job: one that arrives while the last sender is closing its idle session gets a
sender of its own."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from estafeta.config import DestinationLimits
from estafeta.delivery.engine import Lane


class _ClosingLane(Lane):
    """Senders that take one job each; the first finds none and takes a while to close its session."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine, "yahoo.test", DestinationLimits(concurrency=1))
        self.closing = asyncio.Event()
        self.taken: list[object] = []

    async def _sender(self) -> None:
        if not self.taken and not self.closing.is_set():
            await self.closing.wait()  # the idle timeout fired; QUIT is under way
            return
        self.taken.append(self.jobs.popleft())


async def test_a_job_arriving_while_the_sender_closes_is_still_sent() -> None:
    engine = SimpleNamespace(stopping=False, lane_idle=lambda lane: None)
    lane = _ClosingLane(engine)
    lane.add("first")
    lane.jobs.clear()  # another sender got there first: this one will find nothing and close
    await asyncio.sleep(0)
    lane.add("job")  # arrives while the only sender is closing: no second sender yet (concurrency 1)
    assert len(lane.senders) == 1
    lane.closing.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert lane.taken == ["job"] and not lane.jobs and not lane.senders
