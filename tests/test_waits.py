"""Waiting with a time limit in loops that are stopped by cancellation."""

from __future__ import annotations

import asyncio

import pytest

from estafeta.waits import wait_set


async def test_a_cancel_arriving_as_the_event_is_set_stops_the_loop() -> None:
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            event.clear()
            await wait_set(event, 30)

    for _ in range(20):
        task = asyncio.create_task(loop())
        await asyncio.sleep(0)  # the loop is waiting
        event.set()
        task.cancel()  # in the same turn: the event's waiter and the cancellation both wake it
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)


async def test_it_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert not await wait_set(event, 0.01)
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_set(event, 5)
