"""`Limits` kept in this process: what a single node (or a node that limits only itself) uses.

Memory stays bounded: at most `max_keys` buckets and as many failure windows are kept; a full bucket or an
empty window is the same as none, so those are forgotten first, then the longest-remembered ones.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from estafeta.clock import Clock

V = TypeVar("V")


@dataclass
class _Bucket:
    tokens: float
    stamp: float  # clock seconds of the last refill
    rate: float
    burst: float

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate >= self.burst


class MemoryLimits:
    def __init__(self, clock: Clock, *, max_keys: int = 10_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self._slots: dict[str, dict[str, float]] = {}  # key → holder → lease end
        self._wishes: dict[str, tuple[int, float]] = {}  # key → (senders waiting for a slot, until)
        self._failures: dict[str, deque[tuple[float, str]]] = {}

    def _now(self) -> float:
        return self.clock.now().timestamp()

    async def take(self, key: str, rate: float, burst: float) -> float:
        now = self._now()
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room(self._buckets, lambda bucket: bucket.full(now))  # refilled: as good as none
            bucket = self._buckets[key] = _Bucket(burst, now, rate, burst)
        elif now > bucket.stamp:
            bucket.rate, bucket.burst = rate, burst
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / rate

    def _make_room(self, table: dict[str, V], spent: Callable[[V], bool]) -> None:
        """When `table` is full (`max_keys`), drop its spent entries, then its oldest, so a new key fits."""
        if len(table) < self.max_keys:
            return
        for key in [key for key, value in table.items() if spent(value)]:
            del table[key]
        while len(table) >= self.max_keys:
            del table[next(iter(table))]

    def _held(self, key: str, now: float) -> dict[str, float]:
        held = self._slots.setdefault(key, {})
        for holder in [h for h, until in held.items() if until <= now]:
            del held[holder]
        return held

    async def acquire(self, key: str, holder: str, limit: int, lease: float) -> bool:
        now = self._now()
        held = self._held(key, now)
        if holder not in held and len(held) >= limit:
            return False
        held[holder] = now + lease
        return True

    async def renew(self, key: str, holder: str, lease: float) -> bool:
        now = self._now()
        held = self._held(key, now)
        if holder not in held:
            return False
        held[holder] = now + lease
        return True

    async def release(self, key: str, holder: str) -> None:
        held = self._slots.get(key)
        if held is not None:
            held.pop(holder, None)
            if not held:
                del self._slots[key]

    async def want(self, key: str, count: int, seconds: float) -> None:
        now = self._now()
        self._make_room(self._wishes, lambda wish: wish[1] <= now)
        self._wishes[key] = (count, now + seconds)

    async def wanted(self, key: str) -> bool:
        count, until = self._wishes.pop(key, (0, 0.0))
        if count < 1 or until <= self._now():
            return False
        if count > 1:
            self._wishes[key] = (count - 1, until)
        return True

    def _recent(self, key: str, now: float, window: float) -> deque[tuple[float, str]] | None:
        times = self._failures.get(key)
        while times and times[0][0] <= now - window:
            times.popleft()
        if times is not None and not times:
            del self._failures[key]
            return None
        return times

    async def attempt(self, key: str, max_failures: int, window: float) -> str | None:
        now = self._now()
        times = self._recent(key, now, window)
        if times is not None and len(times) >= max_failures:
            return None
        if times is None:
            # Keys whose failures all aged out go first.
            self._make_room(self._failures, lambda kept: not kept or kept[-1][0] <= now - window)
            times = self._failures[key] = deque()
        token = secrets.token_hex(8)
        times.append((now, token))
        return token

    async def forgive(self, key: str, token: str) -> None:
        times = self._failures.get(key)
        if times is None:
            return
        for entry in times:
            if entry[1] == token:
                times.remove(entry)
                break
        if not times:
            del self._failures[key]

    async def close(self) -> None:
        """Nothing to let go of."""
