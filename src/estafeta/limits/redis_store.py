"""`Limits` shared by every node through one Redis, as KumoMTA shares its throttles.

Each operation is one Lua script, so it is atomic however many nodes call it at once. Times come from the
caller's clock (nodes keep their clocks in step with NTP, as the database's leases already require); keys
also get a Redis expiry a little past their last use, so nothing is left behind.

Any Redis error (unreachable, timed out, refused) raises `LimitsUnavailable`: the caller refuses the
limited work for now instead of letting it through unlimited.
"""

from __future__ import annotations

import secrets
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from estafeta.clock import Clock
from estafeta.config import RedisSettings
from estafeta.limits.base import LimitsUnavailable

KEEP_MS = 60_000  # milliseconds a key outlives what it remembers

_TAKE = """
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 't', 's')
local tokens, stamp = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, stamp = burst, now end
if now > stamp then tokens, stamp = math.min(burst, tokens + (now - stamp) * rate), now end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 's', tostring(stamp))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + tonumber(ARGV[4]))
return tostring(wait)
"""

_ACQUIRE = """
local now, limit, lease = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], tostring(now + lease), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000) + tonumber(ARGV[5]))
return 1
"""

_RENEW = """
local now, lease = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], tostring(now + lease), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000) + tonumber(ARGV[4]))
return 1
"""

_WANTED = """
local wishes = tonumber(redis.call('GET', KEYS[1]))
if not wishes or wishes < 1 then return 0 end
if wishes > 1 then redis.call('DECR', KEYS[1]) else redis.call('DEL', KEYS[1]) end
return 1
"""

_ATTEMPT = """
local now, window, most = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= most then return 0 end
redis.call('ZADD', KEYS[1], tostring(now), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + tonumber(ARGV[5]))
return 1
"""


class RedisLimits:
    def __init__(self, settings: RedisSettings, clock: Clock) -> None:
        assert settings.url
        self.clock = clock
        self.prefix = settings.key_prefix
        self.url = settings.url
        # Callers beyond `max_connections` queue for a connection (a busy moment is not an outage: they
        # wait up to ten operations' time); one quick retry at most: a limit check must not hold up its
        # caller while Redis is away.
        pool = redis.BlockingConnectionPool.from_url(
            settings.url,
            max_connections=settings.max_connections,
            timeout=10 * settings.timeout,
            socket_timeout=settings.timeout,
            socket_connect_timeout=settings.timeout,
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), 1),
        )
        self.redis = redis.Redis(connection_pool=pool)
        self._take = self.redis.register_script(_TAKE)
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._renew = self.redis.register_script(_RENEW)
        self._wanted = self.redis.register_script(_WANTED)
        self._attempt = self.redis.register_script(_ATTEMPT)

    def _now(self) -> str:
        return repr(self.clock.now().timestamp())

    async def _call(self, command: Any) -> Any:
        try:
            return await command
        except (RedisError, OSError) as exc:
            raise LimitsUnavailable(f"shared limits unavailable (Redis at {self._where()}): {exc}") from exc

    def _where(self) -> str:
        return self.url.rsplit("@", 1)[-1]  # never the password

    async def take(self, key: str, rate: float, burst: float) -> float:
        args = [self._now(), repr(rate), repr(burst), KEEP_MS]
        return float(await self._call(self._take(keys=[self.prefix + key], args=args)))

    async def acquire(self, key: str, holder: str, limit: int, lease: float) -> bool:
        args = [holder, self._now(), limit, repr(lease), KEEP_MS]
        return bool(await self._call(self._acquire(keys=[self.prefix + key], args=args)))

    async def renew(self, key: str, holder: str, lease: float) -> bool:
        args = [holder, self._now(), repr(lease), KEEP_MS]
        return bool(await self._call(self._renew(keys=[self.prefix + key], args=args)))

    async def release(self, key: str, holder: str) -> None:
        await self._call(self.redis.zrem(self.prefix + key, holder))

    async def want(self, key: str, count: int, seconds: float) -> None:
        wish = f"{self.prefix}{key}:wanted"
        await self._call(self.redis.set(wish, count, px=max(1, round(seconds * 1000))))

    async def wanted(self, key: str) -> bool:
        return bool(await self._call(self._wanted(keys=[f"{self.prefix}{key}:wanted"])))

    async def attempt(self, key: str, max_failures: int, window: float) -> str | None:
        token = secrets.token_hex(8)
        args = [token, self._now(), repr(window), max_failures, KEEP_MS]
        return token if await self._call(self._attempt(keys=[self.prefix + key], args=args)) else None

    async def forgive(self, key: str, token: str) -> None:
        await self._call(self.redis.zrem(self.prefix + key, token))

    async def close(self) -> None:
        await self.redis.aclose()
