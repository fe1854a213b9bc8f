"""Shared limits: the same behaviour from the in-process backend and from Redis (a real server at
127.0.0.1:6379, each test under a key prefix of its own)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from estafeta.clock import ManualClock
from estafeta.config import RedisSettings
from estafeta.limits import Limits, LimitsUnavailable, open_limits
from estafeta.limits.memory import MemoryLimits
from estafeta.limits.redis_store import RedisLimits


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["memory", "redis"])
async def limits(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Limits]:
    if request.param == "memory":
        backend: Limits = MemoryLimits(clock)
        yield backend
        return
    url = request.getfixturevalue("redis_server")
    prefix = f"test:{secrets.token_hex(6)}:"
    backend = open_limits(RedisSettings(url=url, key_prefix=prefix), clock)
    assert isinstance(backend, RedisLimits)
    yield backend
    keys = [key async for key in backend.redis.scan_iter(f"{prefix}*")]
    if keys:
        await backend.redis.delete(*keys)
    await backend.close()


async def test_a_bucket_gives_its_burst_then_its_rate(limits: Limits, clock: ManualClock) -> None:
    assert [await limits.take("b", 2, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await limits.take("b", 2, 3) == pytest.approx(0.5)
    clock.advance(0.25)
    assert await limits.take("b", 2, 3) == pytest.approx(0.25)  # half a token earned so far
    clock.advance(0.25)
    assert await limits.take("b", 2, 3) == 0.0
    assert await limits.take("other", 2, 3) == 0.0  # buckets are separate
    clock.advance(3600)
    assert [await limits.take("b", 2, 3) for _ in range(4)][-1] > 0  # refilled up to the burst only


async def test_concurrent_takes_never_spend_more_than_the_bucket_holds(limits: Limits) -> None:
    waits = await asyncio.gather(*(limits.take("busy", 1, 5) for _ in range(20)))
    assert sum(1 for wait in waits if wait == 0.0) == 5


async def test_slots_are_limited_renewed_and_released(limits: Limits, clock: ManualClock) -> None:
    assert await limits.acquire("mx", "a", 2, 30)
    assert await limits.acquire("mx", "b", 2, 30)
    assert not await limits.acquire("mx", "c", 2, 30)
    assert await limits.acquire("mx", "a", 2, 30)  # a holder asking again keeps its one slot
    await limits.release("mx", "a")
    assert await limits.acquire("mx", "c", 2, 30)
    assert await limits.acquire("other", "a", 1, 30)
    await limits.release("mx", "nobody")


async def test_a_slot_whose_holder_stopped_renewing_expires(limits: Limits, clock: ManualClock) -> None:
    assert await limits.acquire("mx", "dead", 1, 10)
    assert await limits.acquire("mx", "alive", 2, 10)
    clock.advance(6)
    assert await limits.renew("mx", "alive", 10)
    assert not await limits.acquire("mx", "new", 2, 10)
    clock.advance(6)  # the dead holder's lease ran out; the renewed one did not
    assert not await limits.renew("mx", "dead", 10)
    assert await limits.acquire("mx", "new", 2, 10)
    assert not await limits.acquire("mx", "third", 2, 10)


async def test_each_wish_for_a_slot_is_taken_by_one_holder(limits: Limits) -> None:
    assert not await limits.wanted("mx")
    await limits.want("mx", 1, 30)
    await limits.want("mx", 2, 30)  # a waiter says again how many wait: the latest count holds
    assert not await limits.wanted("other")
    assert await limits.wanted("mx")
    assert await limits.wanted("mx")
    assert not await limits.wanted("mx")  # taken: a third idle holder keeps its slot


async def test_a_wish_nobody_renews_lapses(clock: ManualClock) -> None:
    limits = MemoryLimits(clock)
    await limits.want("mx", 1, 1)
    clock.advance(2)
    assert not await limits.wanted("mx")


async def test_failures_lock_a_key_out_until_they_age_out(limits: Limits, clock: ManualClock) -> None:
    # Three checks under way at once use up the allowance before any of them has an answer.
    tokens = [await limits.attempt("ip:10.0.0.1", 3, 60) for _ in range(4)]
    assert all(tokens[:3]) and tokens[3] is None
    assert tokens[0] is not None
    await limits.forgive("ip:10.0.0.1", tokens[0])  # one of them was right
    assert await limits.attempt("ip:10.0.0.1", 3, 60) is not None
    assert await limits.attempt("ip:10.0.0.1", 3, 60) is None
    assert await limits.attempt("ip:10.0.0.2", 3, 60) is not None  # other keys are not affected
    clock.advance(61)
    assert await limits.attempt("ip:10.0.0.1", 3, 60) is not None


async def test_unreachable_redis_fails_closed(clock: ManualClock) -> None:
    backend = RedisLimits(RedisSettings(url="redis://127.0.0.1:1/0", timeout=0.5), clock)
    with pytest.raises(LimitsUnavailable, match=r"127\.0\.0\.1:1"):
        await backend.take("b", 1, 1)
    with pytest.raises(LimitsUnavailable):
        await backend.acquire("mx", "a", 1, 10)
    with pytest.raises(LimitsUnavailable):
        await backend.attempt("ip", 1, 10)
    await backend.close()


def test_without_a_redis_url_limits_are_kept_in_the_process(clock: ManualClock) -> None:
    assert isinstance(open_limits(RedisSettings(), clock), MemoryLimits)


async def test_memory_limits_remember_a_bounded_number_of_keys(clock: ManualClock) -> None:
    limits = MemoryLimits(clock, max_keys=3)
    for user in ("a", "b", "c"):
        assert await limits.attempt(user, 2, 60) and await limits.attempt(user, 2, 60)
        assert await limits.attempt(user, 2, 60) is None
    clock.advance(61)
    assert await limits.attempt("d", 2, 60)  # room is made from keys whose failures aged out first
    clock.advance(1)
    for user in ("e", "f", "g"):  # then from the longest-remembered
        await limits.attempt(user, 2, 60)
    assert len(limits._failures) == 3
    assert await limits.attempt("e", 2, 60) and await limits.attempt("e", 2, 60) is None
    for n in range(5):
        await limits.take(f"bucket{n}", 1, 1)
    assert len(limits._buckets) == 3
