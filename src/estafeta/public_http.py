"""HTTP to customers' servers on the public internet only: no private, loopback or link-local addresses.

A webhook URL is the customer's to choose. Without this guard an account could make the platform POST into
the platform's own network (a cloud metadata service, a database on loopback): server-side request
forgery. The check runs where the connection is made: every address the host name resolves to must be
global, and the connection goes to an address that was checked (each in turn, as a resolver-driven
connect would), so a name that changes its answer between the check and the connection (DNS rebinding)
gains nothing. TLS still verifies the certificate
against the host name. The sandbox, whose receivers live on loopback, turns the guard off.

Names are resolved by the system unless a resolver is given: MTA-STS policy fetches and TLS-RPT reports
resolve with the platform's own DNS settings, as MX lookups do (the sandbox's names exist only there).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

import dns.exception
import httpcore
import httpx

Resolve = Callable[[str], Awaitable[list[str]]]
"""Addresses of a host name (an empty list when it has none)."""


def not_public(address: str) -> bool:
    """Whether an IP address is private, loopback, link-local, reserved or otherwise not routable."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone index is not part of the address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def private_target(url: str) -> str | None:
    """Why a URL plainly points into a private network (an IP literal or localhost), or None.

    Names are only resolved when a request is made (see `PublicOnlyBackend`); this catches the obvious
    cases when a URL is configured, with a reason to show."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is this machine"
    try:
        private = not_public(host)
    except ValueError:  # a name, not an address
        return None
    return f"{host} is not a public address" if private else None


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """Connects only to public addresses (any, with `allow_private`), to the very address it checked;
    names are resolved with `resolve` when given, else by the system."""

    def __init__(self, resolve: Resolve | None = None, *, allow_private: bool = False) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._resolve = resolve
        self._allow_private = allow_private

    async def _addresses(self, host: str, port: int) -> list[str]:
        try:
            ipaddress.ip_address(host)
            return [host]
        except ValueError:
            pass
        if self._resolve is not None:
            return await self._resolve(host)
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in found))

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[tuple[int, int, int | bytes] | tuple[int, int, None, int]] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._addresses(host, port)
        except (OSError, TimeoutError, dns.exception.DNSException) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            if not self._allow_private and not_public(address):
                raise httpcore.ConnectError(
                    f"{host} resolves to {address}, which is not a public address; the platform does not "
                    "connect into private networks"
                )
        failure: Exception | None = None
        for address in addresses:  # each checked address in turn, as a resolver-driven connect would
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[tuple[int, int, int | bytes] | tuple[int, int, None, int]] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("connections to local sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One context for every guarded client: loading the CA bundle takes milliseconds, and the link checks
    make a client per message they follow links for."""
    return httpx.create_ssl_context()


def client(
    timeout: httpx.Timeout,
    limits: httpx.Limits,
    *,
    allow_private: bool,
    resolve: Resolve | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """An HTTP client for hosts on the internet; with `allow_private`, one without the guard (the sandbox).

    `resolve` replaces the system's name resolution; `ssl_context` the default trust anchors."""
    verify = ssl_context or _ssl_context()
    # trust_env=False: a proxy named in the environment would make the connection, not the guard.
    if allow_private and resolve is None:
        return httpx.AsyncClient(
            timeout=timeout, limits=limits, verify=verify, follow_redirects=False, trust_env=False
        )
    transport = httpx.AsyncHTTPTransport(verify=verify, limits=limits)
    # httpx builds its connection pool without a way to choose the network backend: build it again with
    # ours, with the same settings httpx would use.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=verify,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=PublicOnlyBackend(resolve, allow_private=allow_private),
    )
    return httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False, trust_env=False)
