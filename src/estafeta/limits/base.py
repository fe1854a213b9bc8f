"""The limits interface and its one error (`estafeta.limits` explains both backends)."""

from __future__ import annotations

from typing import Protocol


class LimitsUnavailable(RuntimeError):
    """The shared limits store (Redis) did not answer: the limited work must wait."""


class Limits(Protocol):
    async def take(self, key: str, rate: float, burst: float) -> float:
        """Spend one token of bucket `key` (`burst` tokens, refilled at `rate` per second): 0.0 when
        spent, else the seconds until one is there (nothing spent)."""
        ...

    async def acquire(self, key: str, holder: str, limit: int, lease: float) -> bool:
        """Hold one of `limit` slots of `key` for `lease` seconds (renewable); False when all are held.
        A holder that dies frees its slot when the lease runs out."""
        ...

    async def renew(self, key: str, holder: str, lease: float) -> bool:
        """Extend `holder`'s slot of `key` by `lease` seconds; False when it no longer holds one."""
        ...

    async def release(self, key: str, holder: str) -> None:
        """Give back `holder`'s slot of `key` (nothing when it holds none)."""
        ...

    async def want(self, key: str, count: int, seconds: float) -> None:
        """Say for `seconds` that `count` senders wait for a slot of `key` (all were held), so that as many
        holders give their slots back (`wanted`): idle ones at once, busy ones once they had their turn."""
        ...

    async def wanted(self, key: str) -> bool:
        """Whether someone waits for a slot of `key`; True takes one of the wishes, so that one holder
        gives way per waiter (a waiter still waiting says so again)."""
        ...

    async def attempt(self, key: str, max_failures: int, window: float) -> str | None:
        """Count an attempt as a failure of `key` in a sliding `window` of seconds, unless `max_failures`
        are already there (then None, nothing counted). The token returned forgives it (`forgive`) once
        it turns out well, so that attempts checked at the same time cannot exceed the allowance together.
        """
        ...

    async def forgive(self, key: str, token: str) -> None:
        """The attempt `token` counted was not a failure after all."""
        ...

    async def close(self) -> None: ...
