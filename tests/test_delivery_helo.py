"""Reverse DNS of sending addresses (FCrDNS) and the EHLO name each one uses, with the world's DNS."""

from __future__ import annotations

import pytest

from estafeta.config import Settings
from estafeta.delivery.helo import SourceNames, check_address, check_pools
from estafeta.delivery.mx import make_resolver
from estafeta.world import World


@pytest.fixture(autouse=True)
def broken_reverse_dns(world: World) -> None:
    """127.0.0.78 names a host that resolves elsewhere; 127.0.0.77 has no PTR at all."""
    world.zone.add("78.0.0.127.in-addr.arpa", "PTR", "mta78.estafeta.test.")
    world.zone.add("mta78.estafeta.test", "A", "127.0.0.99")


def resolver(world: World):  # type: ignore[no-untyped-def]
    return make_resolver([f"{world.dns_address[0]}:{world.dns_address[1]}"])


async def test_an_address_whose_ptr_name_resolves_back_passes(world: World) -> None:
    result = await check_address(resolver(world), "127.0.0.2", "bulk")
    assert result.ok and result.helo == "mta2.estafeta.test" and result.ptr == ("mta2.estafeta.test",)
    assert result.problem == "" and result.pool == "bulk"


async def test_an_address_without_ptr_fails_with_the_record_to_publish(world: World) -> None:
    result = await check_address(resolver(world), "127.0.0.77")
    assert not result.ok and result.helo == ""
    assert result.problem == "127.0.0.77 has no PTR record"
    assert "`77.0.0.127.in-addr.arpa PTR <host name>`" in result.fix and "A 127.0.0.77" in result.fix


async def test_a_ptr_name_resolving_elsewhere_fails(world: World) -> None:
    result = await check_address(resolver(world), "127.0.0.78")
    assert not result.ok and result.ptr == ("mta78.estafeta.test",)
    assert "does not resolve back" in result.problem and "127.0.0.99" in result.problem
    assert result.fix == "publish `mta78.estafeta.test A 127.0.0.78`"


async def test_every_pool_address_is_checked_in_order(world: World) -> None:
    settings = Settings(ip_pools={"bulk": ["127.0.0.2", "127.0.0.77"], "receipts": ["127.0.0.3"]})
    results = await check_pools(settings, resolver(world))
    assert [(r.pool, r.address, r.ok) for r in results] == [
        ("bulk", "127.0.0.2", True),
        ("bulk", "127.0.0.77", False),
        ("receipts", "127.0.0.3", True),
    ]


@pytest.mark.parametrize("mode", ["require", "warn"])
async def test_failing_addresses_are_not_used_unless_the_override_says_so(world: World, mode: str) -> None:
    settings = Settings(
        hostname="mta.estafeta.test",
        ip_pools={"bulk": ["127.0.0.2", "127.0.0.77"]},
        delivery={"reverse_dns": mode},
    )
    names = SourceNames(settings, resolver(world))
    await names.refresh()
    assert names.usable("127.0.0.2") and names.helo("127.0.0.2") == "mta2.estafeta.test"
    assert names.usable("127.0.0.77") is (mode == "warn")
    assert names.helo("127.0.0.77") == "mta.estafeta.test" and names.helo(None) == "mta.estafeta.test"
