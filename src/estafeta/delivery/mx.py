"""MX resolution with dnspython: preference order, the implicit MX (RFC 5321 §5.1), null MX (RFC 7505)."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver


@dataclass(frozen=True)
class MxHost:
    name: str
    preference: int
    addresses: tuple[str, ...]


class DnsPermanentError(Exception):
    """The domain cannot receive mail: retrying will not help."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class DnsTemporaryError(Exception):
    """Resolution failed for now (timeout, SERVFAIL, MX hosts without addresses)."""


def make_resolver(servers: list[str]) -> dns.asyncresolver.Resolver:
    """A caching resolver; `servers` as "host" or "host:port", empty for the system's configuration."""
    if not servers:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        nameservers: list[str | dns.nameserver.Nameserver] = []
        for entry in servers:
            host, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
            nameservers.append(dns.nameserver.Do53Nameserver(host or entry, int(port) if port else 53))
        resolver.nameservers = nameservers
    resolver.cache = dns.resolver.LRUCache(50_000)
    resolver.lifetime = 10.0
    return resolver


class MxResolver:
    """MX hosts per domain, remembered (as are the answers under them, in the resolver's cache) until the
    shortest TTL among the MX and address answers, positive or negative, runs out: each new session to a
    domain then costs a dictionary look-up, not three cache look-ups. Sessions opening to a domain at once
    share one lookup instead of each sending its own queries. Failures are never remembered."""

    def __init__(self, resolver: dns.asyncresolver.Resolver, size: int = 10_000) -> None:
        self.resolver = resolver
        self.size = size
        self._hosts: dict[str, tuple[float, tuple[MxHost, ...]]] = {}
        self._pending: dict[str, asyncio.Future[tuple[MxHost, ...]]] = {}

    async def addresses(self, name: str) -> list[str]:
        """A host's A and AAAA addresses (for HTTPS to hosts named in DNS, as MX hosts are)."""
        addresses, _expiration = await self._addresses(name)
        return list(addresses)

    async def _addresses(self, name: str) -> tuple[tuple[str, ...], float]:
        """The addresses, and until when they hold (now, when a name does not exist: not worth keeping)."""
        found: list[str] = []
        expiration = math.inf
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self.resolver.resolve(name, rdtype, raise_on_no_answer=False)
            except dns.resolver.NXDOMAIN:
                expiration = 0.0
                continue
            expiration = min(expiration, answer.expiration)
            if answer.rrset is not None:
                found.extend(r.to_text() for r in answer.rrset)
        return tuple(found), expiration

    async def resolve(self, domain: str) -> list[MxHost]:
        """MX hosts in preference order, each with its addresses; raises Dns*Error."""
        cached = self._hosts.get(domain)
        if cached is not None and cached[0] > time.time():
            return list(cached[1])
        pending = self._pending.get(domain)
        if pending is None:
            pending = self._pending[domain] = asyncio.ensure_future(self._resolve_and_keep(domain))

            def done(task: asyncio.Future[tuple[MxHost, ...]]) -> None:
                del self._pending[domain]
                if not task.cancelled():
                    task.exception()  # retrieved here, even when every waiter has given up

            pending.add_done_callback(done)
        # Shielded: a session given up does not cancel the lookup that others may be waiting for.
        return list(await asyncio.shield(pending))

    async def _resolve_and_keep(self, domain: str) -> tuple[MxHost, ...]:
        hosts, expiration = await self._resolve(domain)
        self._hosts.pop(domain, None)
        if len(self._hosts) >= self.size:
            del self._hosts[next(iter(self._hosts))]  # the oldest entry
        self._hosts[domain] = (expiration, hosts)
        return hosts

    async def _resolve(self, domain: str) -> tuple[tuple[MxHost, ...], float]:
        try:
            answer = await self.resolver.resolve(domain, "MX", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            raise DnsPermanentError("5.1.2", f"domain {domain} does not exist (NXDOMAIN)") from exc
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise DnsTemporaryError(f"MX lookup for {domain} failed: {exc}") from exc
        expiration = answer.expiration
        if answer.rrset is not None:
            records = sorted((r.preference, r.exchange.to_text(omit_final_dot=True)) for r in answer.rrset)
        else:
            records = [(0, domain)]  # no MX: the domain's own address is the implicit MX
        if len(records) == 1 and records[0][1] in ("", "."):
            raise DnsPermanentError("5.1.10", f"domain {domain} accepts no mail (null MX)")
        hosts: list[MxHost] = []
        try:
            for preference, name in records:
                addresses, until = await self._addresses(name)
                expiration = min(expiration, until)
                if addresses:
                    hosts.append(MxHost(name, preference, addresses))
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise DnsTemporaryError(f"address lookup for the MX of {domain} failed: {exc}") from exc
        if not hosts:
            if records == [(0, domain)]:
                raise DnsPermanentError("5.1.2", f"domain {domain} has no MX and no address record")
            raise DnsTemporaryError(f"no address for any MX host of {domain}")
        return tuple(hosts), expiration
