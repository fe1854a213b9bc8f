"""Waiting for an event with a time limit, in loops that are stopped by cancelling them.

Not `asyncio.wait_for(event.wait(), timeout)`: on Python 3.11 it returns normally when a cancellation
arrives in the same turn of the loop as the event is set, so a loop told to stop keeps running and
whoever awaits it waits forever. `asyncio.timeout` counts cancellations and never loses one.
"""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set, at most `timeout` seconds; whether it was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
