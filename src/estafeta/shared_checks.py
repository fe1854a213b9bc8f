"""Concurrent callers asking the same costly question share one answer.

Credential checks hash with argon2, which is slow by design: a client opening many connections (or sending
many requests) at once with one key would otherwise spend a core verifying the same secret again and again
before the first answer is remembered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedChecks(Generic[T]):
    """Runs at most one check per key at a time; whoever asks meanwhile waits for that check's answer."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[T]] = {}

    async def run(self, key: Hashable, check: Callable[[], Awaitable[T]]) -> T:
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = asyncio.ensure_future(check())
            running.add_done_callback(lambda _: self._running.pop(key, None))
        return await asyncio.shield(running)  # a caller that goes away stops no one else's check
