"""Limits that hold across every node of a platform: token buckets, concurrency slots with leases and
sliding failure windows.

One interface (`Limits`), two backends: `RedisLimits` (shared by every node through one Redis, each
operation one Lua script, so it is atomic) when `redis.url` is set, and `MemoryLimits` (this process only)
otherwise. Both take the time from the platform's clock, so a test drives either with a manual clock.

When Redis is configured but cannot be reached, operations raise `LimitsUnavailable` rather than let work
through unlimited: callers answer with a temporary refusal (delivery defers, the relay answers 4xx, the API
503) so that nothing exceeds a limit and nothing is lost.
"""

from __future__ import annotations

from estafeta.clock import Clock
from estafeta.config import RedisSettings
from estafeta.limits.base import Limits, LimitsUnavailable
from estafeta.limits.memory import MemoryLimits
from estafeta.limits.redis_store import RedisLimits

__all__ = ["Limits", "LimitsUnavailable", "MemoryLimits", "RedisLimits", "open_limits"]


def open_limits(settings: RedisSettings, clock: Clock) -> Limits:
    """Redis-backed limits when `settings.url` is set, else this process's own."""
    if settings.url:
        return RedisLimits(settings, clock)
    return MemoryLimits(clock)
