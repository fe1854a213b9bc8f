"""Delivery's DNS cache against a real loopback DNS server: answers, positive and negative (RFC 2308), are
reused for their TTL and not after it; failed lookups are not remembered at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import dns.name
import dns.rdatatype
import pytest

from estafeta.delivery.mx import DnsPermanentError, DnsTemporaryError, MxHost, MxResolver, make_resolver
from estafeta.world.dns_server import DnsServer
from estafeta.world.zone import Lookup, WorldZone

TTL = 1  # seconds: short, so that expiry shows within the test
EXPIRED = TTL + 0.2


@pytest.fixture
def zone() -> WorldZone:
    records = [
        f"mx1.example.test. {TTL} IN A 127.0.0.11",
        f"mx2.example.test. {TTL} IN A 127.0.0.12",
        f"example.test. {TTL} IN MX 10 mx1.example.test.",
    ]
    return WorldZone("\n".join(records) + "\n", "", negative_ttl=TTL)


@pytest.fixture
async def server(zone: WorldZone) -> AsyncIterator[DnsServer]:
    server = DnsServer(zone)
    await server.start()
    yield server
    await server.stop()


def mx_resolver(server: DnsServer) -> MxResolver:
    host, port = server.address
    return MxResolver(make_resolver([f"{host}:{port}"]))


async def test_a_changed_mx_is_seen_once_the_cached_answer_expires(
    zone: WorldZone, server: DnsServer
) -> None:
    resolver = mx_resolver(server)
    before = [MxHost("mx1.example.test", 10, ("127.0.0.11",))]
    assert await resolver.resolve("example.test") == before
    zone.remove("example.test.", "MX")
    zone.add("example.test.", "MX", "20 mx2.example.test.", ttl=TTL)
    assert await resolver.resolve("example.test") == before  # within the TTL: the cached answer
    await asyncio.sleep(EXPIRED)
    assert await resolver.resolve("example.test") == [MxHost("mx2.example.test", 20, ("127.0.0.12",))]


async def test_a_missing_record_is_remembered_for_the_zones_negative_ttl(
    zone: WorldZone, server: DnsServer
) -> None:
    """The empty AAAA answer of an IPv4-only MX host is not asked again at each new session."""
    resolver = mx_resolver(server)
    assert await resolver.addresses("mx1.example.test") == ["127.0.0.11"]
    zone.add("mx1.example.test.", "AAAA", "::1", ttl=TTL)
    assert await resolver.addresses("mx1.example.test") == ["127.0.0.11"]
    await asyncio.sleep(EXPIRED)
    assert await resolver.addresses("mx1.example.test") == ["127.0.0.11", "::1"]


async def test_a_domain_that_does_not_exist_is_remembered_for_the_negative_ttl(
    zone: WorldZone, server: DnsServer
) -> None:
    resolver = mx_resolver(server)
    with pytest.raises(DnsPermanentError, match="NXDOMAIN"):
        await resolver.resolve("new.test")
    zone.add("new.test.", "MX", "10 mx1.example.test.", ttl=TTL)
    with pytest.raises(DnsPermanentError, match="NXDOMAIN"):
        await resolver.resolve("new.test")
    await asyncio.sleep(EXPIRED)
    assert await resolver.resolve("new.test") == [MxHost("mx1.example.test", 10, ("127.0.0.11",))]


async def test_a_failed_lookup_is_not_remembered(zone: WorldZone) -> None:
    """A timeout (the server down) is a temporary error; the next lookup asks again and gets the answer."""
    server = DnsServer(zone)
    await server.start()
    host, port = server.address
    await server.stop()
    resolver = make_resolver([f"{host}:{port}"])
    resolver.lifetime = 0.3
    with pytest.raises(DnsTemporaryError):
        await MxResolver(resolver).resolve("example.test")
    server = DnsServer(zone, host, port)
    await server.start()
    try:
        hosts = await MxResolver(resolver).resolve("example.test")
        assert hosts == [MxHost("mx1.example.test", 10, ("127.0.0.11",))]
    finally:
        await server.stop()


class CountingZone(WorldZone):
    """A zone that counts the queries its server answers."""

    queries = 0

    def lookup(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> Lookup:
        self.queries += 1
        return super().lookup(qname, rdtype)


async def test_sessions_opening_at_once_share_one_lookup() -> None:
    zone = CountingZone(
        f"mx1.example.test. {TTL} IN A 127.0.0.11\nexample.test. {TTL} IN MX 10 mx1.example.test.\n", ""
    )
    server = DnsServer(zone)
    await server.start()
    try:
        resolver = mx_resolver(server)
        answers = await asyncio.gather(*(resolver.resolve("example.test") for _ in range(20)))
        assert answers == [[MxHost("mx1.example.test", 10, ("127.0.0.11",))]] * 20
        assert zone.queries == 3  # MX, A and AAAA: once
    finally:
        await server.stop()
