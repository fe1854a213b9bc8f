"""The guard on HTTP to customers' endpoints: nothing in private networks unless the platform allows it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from estafeta import public_http
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
