"""The guard on HTTP to customers' endpoints: nothing in private networks unless the platform allows it."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from estafeta import public_http
from estafeta.public_http import canonical_url, embedded_ipv4, not_public
from tests.loopback_http import http_server


@pytest.mark.parametrize(
    ("url", "private"),
    [
        ("http://127.0.0.1:8080/hooks", True),
        ("https://[::1]/hooks", True),
        ("http://169.254.169.254/latest/meta-data", True),  # cloud metadata service
        ("http://10.1.2.3/", True),
        ("http://192.168.0.10/", True),
        ("http://[::ffff:10.0.0.1]/", True),  # IPv4-mapped
        ("http://[::127.0.0.1]/", True),  # IPv4-compatible
        ("http://[::ffff:0:127.0.0.1]/", True),  # IPv4-translated (SIIT)
        ("http://[64:ff9b::127.0.0.1]/", True),  # NAT64
        ("http://[64:ff9b::a9fe:a9fe]/", True),  # NAT64 of the metadata service
        ("http://[2002:7f00:1::1]/", True),  # 6to4 of 127.0.0.1
        ("http://[2002:c0a8:1::]/", True),  # 6to4 of 192.168.0.1
        ("http://[64:ff9b::5db8:d70e]/", False),  # NAT64 of a public address
        ("http://[2002:5db8:d70e::1]/", False),  # 6to4 of a public address
        ("http://[2606:4700::6810:84e5]/", False),
        ("http://localhost:5432/", True),
        ("http://db.localhost/", True),
        ("https://hooks.example.com/estafeta", False),  # names are judged when connecting
        ("https://93.184.215.14/hooks", False),
    ],
)
def test_urls_into_private_networks_are_recognised(url: str, private: bool) -> None:
    assert (public_http.private_target(url) is not None) == private


@pytest.fixture
async def loopback_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """An HTTP server on 127.0.0.1 that answers 200 and records the requests it got."""
    async with http_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok") as running:
        yield running


async def test_the_guarded_client_never_connects_to_loopback(
    loopback_server: tuple[int, list[bytes]],
) -> None:
    port, seen = loopback_server
    timeout, limits = httpx.Timeout(5.0), httpx.Limits(max_connections=4)
    async with public_http.client(timeout, limits, allow_private=False) as guarded:
        for host in ("127.0.0.1", "localhost"):  # an address, and a name that resolves to loopback
            with pytest.raises(httpx.ConnectError, match="not a public address"):
                await guarded.post(f"http://{host}:{port}/hooks", content=b"{}")
    assert seen == []
    async with public_http.client(timeout, limits, allow_private=True) as sandbox:
        response = await sandbox.post(f"http://127.0.0.1:{port}/hooks", content=b"{}")
    assert response.status_code == 200 and len(seen) == 1


def _private_v4(ip: ipaddress.IPv4Address) -> bool:
    return not ip.is_global or ip.is_multicast


def _embeddings(v4: ipaddress.IPv4Address, high: int, low: int) -> list[ipaddress.IPv6Address]:
    """Every IPv6 form that reaches `v4`; `high` and `low` fill the bits each form leaves free."""
    n = int(v4)
    return [
        ipaddress.IPv6Address(0xFFFF << 32 | n),  # ::ffff:a.b.c.d, mapped
        ipaddress.IPv6Address(n),  # ::a.b.c.d, compatible
        ipaddress.IPv6Address(0xFFFF << 48 | n),  # ::ffff:0:a.b.c.d, translated
        ipaddress.IPv6Address(0x64FF9B << 96 | n),  # 64:ff9b::a.b.c.d, NAT64
        ipaddress.IPv6Address(0x2002 << 112 | n << 80 | (high & 0xFFFF) << 64 | low),  # 6to4
    ]


@given(st.ip_addresses(v=4).filter(_private_v4), st.integers(0, 2**16 - 1), st.integers(0, 2**64 - 1))
def test_a_private_ipv4_address_is_private_in_every_ipv6_spelling(
    v4: ipaddress.IPv4Address, high: int, low: int
) -> None:
    assert not_public(str(v4))
    for v6 in _embeddings(v4, high, low):
        assert v4 in embedded_ipv4(v6)
        for spelling in (v6.compressed, v6.exploded, f"{v6.compressed}%eth0"):
            assert not_public(spelling), spelling
        assert public_http.private_target(f"http://[{v6.compressed}]/") is not None


@given(st.ip_addresses(v=4).filter(lambda ip: not _private_v4(ip)), st.integers(0, 2**16 - 1))
def test_a_public_ipv4_address_stays_public_where_its_embedding_is_routable(
    v4: ipaddress.IPv4Address, high: int
) -> None:
    mapped, compatible, translated, nat64, sixtofour = _embeddings(v4, high, 1)
    assert not not_public(str(v4))
    assert not any(not_public(str(v6)) for v6 in (mapped, translated, nat64, sixtofour))
    assert not_public(str(compatible))  # deprecated: never a public endpoint


@given(st.ip_addresses())
def test_the_guard_agrees_with_the_stdlib_registry_for_plain_addresses(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    private = not_public(str(ip))
    if not ip.is_global or ip.is_multicast:
        assert private
    elif isinstance(ip, ipaddress.IPv6Address) and not private:
        assert all(not _private_v4(v4) for v4 in embedded_ipv4(ip))


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("http://0177.0.0.1:8080/x", "http://127.0.0.1:8080/x"),  # octal, as browsers and resolvers read it
        ("http://\u2460\u2461\u2466.0.0.1/", "http://127.0.0.1/"),  # circled digits fold (UTS #46)
        ("http://2130706433/", "http://127.0.0.1/"),
        ("http://0x7f.1/", "http://127.0.0.1/"),
        ("HTTPS://Hooks.Example.COM./a?b=1#frag", "https://hooks.example.com/a?b=1"),
        ("http://[::127.0.0.1]/", "http://[::7f00:1]/"),
        ("https://b\u00fccher.example/h", "https://xn--bcher-kva.example/h"),
        ("https://hooks.example.com", "https://hooks.example.com/"),
        ("http://user:secret@hooks.example.com:8443/x", "http://user:secret@hooks.example.com:8443/x"),
    ],
)
def test_urls_are_made_canonical(url: str, canonical: str) -> None:
    assert canonical_url(url) == canonical
    assert canonical_url(canonical) == canonical


@pytest.mark.parametrize(
    "url",
    [
        "http://256.0.0.1/",
        "http://1.2.3.4.5/",
        "http://0x7g.0.0.1/",
        "http://099.0.0.1/",  # not octal
        "http://a..b/",
        "http://-a.example/",
        "http://[fe80::1%25eth0]/",
        "http://[::1/",
        "http://x.example:99999/",
        "http://x.example/\u0005",
        "ftp://x.example/",
        "/relative",
    ],
)
def test_urls_the_client_cannot_use_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        canonical_url(url)


@given(st.text(max_size=80))
def test_canonical_urls_are_always_usable_by_the_client(tail: str) -> None:
    for url in (f"http://{tail}", f"https://hooks.example.com/{tail}", f"http://{tail}.example/x"):
        try:
            canonical = canonical_url(url)
        except ValueError:
            continue
        httpx.URL(canonical)  # never raises
        assert canonical_url(canonical) == canonical
