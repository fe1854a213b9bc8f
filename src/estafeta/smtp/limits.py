"""Relay limits that need memory between commands: connections per client, and failed logins per client
address and per username.

Failed logins are counted in the platform's limits (`estafeta.limits`), so with Redis configured a
lockout holds on every node. Open connections are counted by the process that holds them: each node
allows `max_connections_per_ip` of its own.
"""

from __future__ import annotations

from collections import Counter

from estafeta.limits import Limits


class ConnectionLimiter:
    """Counts open connections per client address and refuses more than `max_per_ip` at once."""

    def __init__(self, max_per_ip: int) -> None:
        if max_per_ip < 1:
            raise ValueError("max_per_ip must be >= 1")
        self.max_per_ip = max_per_ip
        self._open: Counter[str] = Counter()

    def acquire(self, ip: str) -> bool:
        """Count a new connection from `ip`; False (and nothing counted) when it already has the maximum."""
        if self._open[ip] >= self.max_per_ip:
            return False
        self._open[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self._open[ip] -= 1
        if self._open[ip] <= 0:
            del self._open[ip]


class LoginFailureLimiter:
    """Failed logins per key (a client address, or a username) within a sliding window, counted in the
    platform's limits (`estafeta.limits`: shared by every node when Redis is configured). Past
    `max_failures`, logins with that key are refused unchecked until the oldest failure leaves the window:
    a password guesser gains nothing, and cannot keep the platform busy computing argon2 hashes.

    Memory is bounded either way: the in-process backend keeps a bounded number of keys, and Redis forgets
    a key once its window has passed."""

    def __init__(self, limits: Limits, scope: str, max_failures: int, window: float) -> None:
        if max_failures < 1 or window <= 0:
            raise ValueError("max_failures must be >= 1 and window > 0")
        self.limits = limits
        self.scope = scope
        self.max_failures = max_failures
        self.window = window

    async def attempt(self, key: str) -> str | None:
        """Whether a login with `key` may be checked now: a token, or None when it is locked out. It counts
        as a failure until `succeeded` says otherwise, so that logins checked at the same time cannot
        exceed the allowance together. Raises `LimitsUnavailable` when the shared limits cannot be asked."""
        return await self.limits.attempt(f"{self.scope}:{key}", self.max_failures, self.window)

    async def succeeded(self, key: str, token: str) -> None:
        """The login `attempt` counted was right: it is not a failure."""
        await self.limits.forgive(f"{self.scope}:{key}", token)
