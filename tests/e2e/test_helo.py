"""Sending addresses greet receivers with their own verified PTR names; one that fails reverse DNS sends
nothing unless the override allows it."""

from __future__ import annotations

from pathlib import Path

from estafeta.world import World
from tests.e2e.harness import start_harness


async def _deliver(world: World, tmp_path: Path, pools: dict[str, list[str]], **settings: object) -> dict:  # type: ignore[type-arg]
    h = await start_harness(world, f"sqlite:///{tmp_path / 'helo.db'}", ip_pools=pools, **settings)
    try:
        ids = [await h.send(to=[f"user{i}@yahoo.test"]) for i in range(4)]
        return {message_id: await h.wait_for(message_id, lambda v: v["recipients"][0]["state"] != "queued")
                for message_id in ids}  # fmt: skip
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)


async def test_each_source_address_greets_with_its_ptr_name(fresh_world: World, tmp_path: Path) -> None:
    views = await _deliver(fresh_world, tmp_path, {"transactional": ["127.0.0.2", "127.0.0.3"]})
    assert all(v["state"] == "delivered" for v in views.values())
    greetings = {(r.peer, r.helo) for r in fresh_world.received("yahoo.test")}
    assert greetings == {("127.0.0.2", "mta2.estafeta.test"), ("127.0.0.3", "mta3.estafeta.test")}


async def test_without_a_pool_the_platform_greets_with_its_hostname(
    fresh_world: World, tmp_path: Path
) -> None:
    await _deliver(fresh_world, tmp_path, {})
    assert {(r.peer, r.helo) for r in fresh_world.received("yahoo.test")} == {
        ("127.0.0.1", "mta.estafeta.test")
    }


async def test_an_address_without_ptr_is_left_out_of_its_pool(fresh_world: World, tmp_path: Path) -> None:
    views = await _deliver(fresh_world, tmp_path, {"transactional": ["127.0.0.2", "127.0.0.77"]})
    assert all(v["state"] == "delivered" for v in views.values())
    assert {r.peer for r in fresh_world.received("yahoo.test")} == {"127.0.0.2"}


async def test_a_pool_without_a_passing_address_holds_its_mail(fresh_world: World, tmp_path: Path) -> None:
    views = await _deliver(fresh_world, tmp_path, {"transactional": ["127.0.0.77"]})
    for view in views.values():
        (recipient,) = view["recipients"]
        assert recipient["state"] == "deferred" and recipient["attempts"] == 0
        assert (
            "no sending address of IP pool transactional passes the reverse-DNS check"
            in recipient["last_reply"]
        )
    assert not fresh_world.received("yahoo.test")


async def test_the_override_sends_from_a_failing_address(fresh_world: World, tmp_path: Path) -> None:
    pools = {"transactional": ["127.0.0.77"]}
    views = await _deliver(fresh_world, tmp_path, pools, delivery={"reverse_dns": "warn"})
    assert all(v["state"] == "delivered" for v in views.values())
    assert {(r.peer, r.helo) for r in fresh_world.received("yahoo.test")} == {
        ("127.0.0.77", "mta.estafeta.test")
    }
