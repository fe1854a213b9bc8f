"""Relay limits that need memory between commands: sending rate per account, connections per client, and
failed logins per client address and per username.

They live in the process that holds the connections. Several `serve` processes each enforce their own
share, which is what an operator sizing limits per node expects.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from estafeta.clock import Clock


@dataclass
class _Bucket:
    tokens: float
    updated: float  # clock seconds


class AccountRateLimiter:
    """A token bucket per account: `burst` messages at once, then `rate` messages per second."""

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("rate must be >= 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[int, _Bucket] = {}

    def try_take(self, account_id: int) -> bool:
        """Spend one message of the account's allowance; False when none is left (rate 0: unlimited)."""
        if self.rate == 0:
            return True
        now = self._clock.now().timestamp()
        bucket = self._buckets.get(account_id)
        if bucket is None:
            bucket = self._buckets[account_id] = _Bucket(float(self.burst), now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True


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
    """Failed logins per key (a client address, or a username) within a sliding window. Past
    `max_failures`, logins with that key are refused unchecked until the oldest failure leaves the window: a
    password guesser gains nothing, and cannot keep the platform busy computing argon2 hashes.

    Memory is bounded: at most `max_keys` keys are remembered; past that, keys whose failures aged out are
    forgotten first, then the longest-remembered ones."""

    def __init__(self, max_failures: int, window: float, clock: Clock, *, max_keys: int = 10_000) -> None:
        if max_failures < 1 or window <= 0 or max_keys < 1:
            raise ValueError("max_failures and max_keys must be >= 1 and window > 0")
        self.max_failures = max_failures
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        while times and times[0] <= now - self.window:
            times.popleft()
        if times is not None and not times:
            del self._failures[key]
            return None
        return times

    def attempt(self, key: str) -> bool:
        """Whether a login with `key` may be checked now. It counts as a failure until `succeeded` says
        otherwise, so that logins checked at the same time cannot exceed the allowance together."""
        now = self._clock.now().timestamp()
        times = self._recent(key, now)
        if times is not None and len(times) >= self.max_failures:
            return False
        if times is None:
            self._make_room(now)
            times = self._failures[key] = deque()
        times.append(now)
        return True

    def _make_room(self, now: float) -> None:
        if len(self._failures) < self.max_keys:
            return
        for other in list(self._failures):  # keys whose failures have all aged out
            self._recent(other, now)
        while len(self._failures) >= self.max_keys:  # then the longest-remembered
            del self._failures[next(iter(self._failures))]

    def succeeded(self, key: str) -> None:
        """The login `attempt` counted was right: it is not a failure."""
        times = self._failures.get(key)
        if times:
            times.pop()
            if not times:
                del self._failures[key]
