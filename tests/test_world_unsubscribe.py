"""The simulated providers' side of list mail: gmail.test's one-click rule and its users' RFC 8058 POSTs."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest

from estafeta.world import World
from tests.test_world import message, mx_address, resolver_for, rsa_key, send, signed

__all__ = ["rsa_key"]  # a fixture used below


class OneClickEndpoint:
    """A bare HTTP server on loopback that records each request and answers 200 with a cookie."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/u/token-1"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        self.requests.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nSet-Cookie: s=1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


def bulk(recipient: str, unsubscribe: str | None, post: bool) -> bytes:
    data = message("News <news@acme.test>", recipient, "Bulk").replace(
        b"Subject:", b"Precedence: bulk\r\nSubject:"
    )
    headers = b""
    if unsubscribe is not None:
        headers += f"List-Unsubscribe: <{unsubscribe}>, <mailto:unsub@acme.test>\r\n".encode()
    if post:
        headers += b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    return data.replace(b"Subject:", headers + b"Subject:")


async def test_gmail_refuses_bulk_mail_without_one_click_and_its_users_post_to_unsubscribe(
    world: World, rsa_key: tuple[bytes, str]
) -> None:
    private_key, record = rsa_key
    world.zone.add("s1._domainkey.acme.test", "TXT", record)
    address = await mx_address(resolver_for(world), "gmail.test")
    endpoint = OneClickEndpoint()
    url = await endpoint.start()

    for unsubscribe, post in ((None, False), (url, False), ("ftp://acme.test/u", True)):
        data = signed(bulk("unsub-ann@gmail.test", unsubscribe, post), "acme.test", private_key)
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await send(world, address, "b@acme.test", ["unsub-ann@gmail.test"], data)
        assert refused.value.code == 550 and "RFC 8058" in refused.value.message

    for recipient in ("unsub-ann@gmail.test", "bob@gmail.test"):
        data = signed(bulk(recipient, url, True), "acme.test", private_key)
        await send(world, address, "b@acme.test", [recipient], data)
    world.unsubscribe_for(["bob@gmail.test"])
    data = signed(bulk("carl@gmail.test", url, True), "acme.test", private_key)
    await send(world, address, "b@acme.test", ["carl@gmail.test"], data)  # not chosen: no POST

    for _ in range(200):
        if len(world.unsubscribes()) == 1:
            break
        await asyncio.sleep(0.01)
    (done,) = world.unsubscribes()
    assert (done.recipient, done.method, done.target, done.status, done.cookies) == (
        "unsub-ann@gmail.test", "one-click", url, 200, True,
    )  # fmt: skip
    (request,) = endpoint.requests
    assert request.startswith(b"POST /u/token-1 HTTP/1.1\r\n")
    assert request.endswith(b"\r\n\r\nList-Unsubscribe=One-Click")
    assert b"application/x-www-form-urlencoded" in request and b"cookie:" not in request.lower()
    assert world.stats()["gmail.test"].accepted == 3
    world.reset()
    assert world.unsubscribes() == []
