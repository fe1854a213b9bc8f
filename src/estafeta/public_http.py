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
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from string import hexdigits
from urllib.parse import urlsplit, urlunsplit

import dns.exception
import httpcore
import httpx
import idna

from estafeta.text import one_line

# IPv6 ranges whose last 32 bits are the IPv4 address actually reached: IPv4-compatible (deprecated),
# IPv4-translated (SIIT, RFC 2765) and the well-known NAT64 prefix (RFC 6052).
_V4_IN_LOW_BITS = tuple(ipaddress.IPv6Network(net) for net in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96"))
# Never a public endpoint: IPv4-compatible addresses are deprecated, 64:ff9b:1::/48 is local-use NAT64.
_NEVER_PUBLIC_V6 = tuple(ipaddress.IPv6Network(net) for net in ("::/96", "64:ff9b:1::/48"))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: mapped, compatible, translated, NAT64, 6to4, Teredo."""
    found = [v4 for v4 in (ip.ipv4_mapped, ip.sixtofour) if v4 is not None]
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if any(ip in net for net in _V4_IN_LOW_BITS):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _not_global(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not ip.is_global or ip.is_multicast


Resolve = Callable[[str], Awaitable[list[str]]]
"""Addresses of a host name (an empty list when it has none)."""


def not_public(address: str) -> bool:
    """Whether an IP address is private, loopback, link-local, reserved or otherwise not routable, judged
    by the stdlib's registry of special ranges, and for IPv6 also by every IPv4 address it embeds (a private
    IPv4 address written as IPv6 reaches the same private host)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone index is not part of the address
    if isinstance(ip, ipaddress.IPv4Address):
        return _not_global(ip)
    if any(ip in net for net in _NEVER_PUBLIC_V6):
        return True
    embedded = embedded_ipv4(ip)
    if any(_not_global(v4) for v4 in embedded):
        return True
    if ip.ipv4_mapped is not None or any(ip in net for net in _V4_IN_LOW_BITS):
        return False  # what is reached is the (public) IPv4 address, whatever the prefix's own flags say
    return _not_global(ip)


_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


def _whatwg_number(label: str) -> int:
    """One part of an IPv4 address as browsers read it: 0x… is hex, a leading 0 octal, else decimal."""
    if label[:2] in ("0x", "0X"):
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label.startswith("0"):
        return int(label[1:], 8)
    return int(label, 10)


def _ends_in_number(host: str) -> bool:
    last = host.removesuffix(".").rpartition(".")[2]
    return bool(last) and (
        last.isdigit() or (last[:2].lower() == "0x" and all(c in hexdigits for c in last[2:]))
    )


def _whatwg_ipv4(host: str) -> ipaddress.IPv4Address:
    """A host that ends in a number is an IPv4 address to browsers (and to the C library's resolver):
    `0177.0.0.1`, `2130706433` and `0x7f.1` are all 127.0.0.1 (WHATWG URL Standard, IPv4 parser)."""
    labels = host.removesuffix(".").split(".")
    try:
        numbers = [_whatwg_number(label) for label in labels]
    except ValueError:
        raise ValueError(f"{host} ends in a number but is not an IPv4 address") from None
    if len(numbers) > 4 or any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError(f"{host} ends in a number but is not an IPv4 address")
    value = numbers[-1] + sum(n << (8 * (3 - i)) for i, n in enumerate(numbers[:-1]))
    return ipaddress.IPv4Address(value)


def _canonical_host(host: str) -> str:
    if ":" in host:  # an IPv6 literal (urlsplit took the brackets off)
        if "%" in host:
            raise ValueError("an IPv6 zone index (%…) cannot be used in a URL")
        return ipaddress.IPv6Address(host).compressed
    try:
        # UTS #46 as browsers apply it: full-width and other compatibility forms fold (①②⑦ is 127).
        ascii_host = host.lower() if host.isascii() else idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"{host} is not a valid host name: {exc}") from None
    if _ends_in_number(ascii_host):
        return str(_whatwg_ipv4(ascii_host))
    name = ascii_host.removesuffix(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"{host} is not a valid host name")
    return name


def canonical_url(url: str) -> str:
    """The URL as the platform will use it: an absolute http(s) URL with its host in canonical form (IPv4
    in dotted decimal, IPv6 compressed, names as lower-case A-labels) and without a fragment; `ValueError`
    for anything else, or anything the HTTP client could not send a request to."""
    try:
        parts = urlsplit(one_line(url).strip())
        port = parts.port
    except ValueError as exc:  # a malformed IPv6 literal, a port out of range
        raise ValueError(f"is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    host = _canonical_host(parts.hostname)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + (f"[{host}]" if ":" in host else host)
    if port is not None:
        netloc += f":{port}"
    canonical = urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))
    try:
        httpx.URL(canonical)
    except httpx.InvalidURL as exc:
        raise ValueError(f"cannot be used: {exc}") from None
    return canonical


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
