"""MX resolution with dnspython: preference order, the implicit MX (RFC 5321 §5.1), null MX (RFC 7505)."""

from __future__ import annotations

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
    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver

    async def addresses(self, name: str) -> list[str]:
        """A host's A and AAAA addresses (for HTTPS to hosts named in DNS, as MX hosts are)."""
        return list(await self._addresses(name))

    async def _addresses(self, name: str) -> tuple[str, ...]:
        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self.resolver.resolve(name, rdtype)
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                continue
            found.extend(r.to_text() for r in answer)
        return tuple(found)

    async def resolve(self, domain: str) -> list[MxHost]:
        """MX hosts in preference order, each with its addresses; raises Dns*Error."""
        try:
            answer = await self.resolver.resolve(domain, "MX")
            records = sorted((r.preference, r.exchange.to_text(omit_final_dot=True)) for r in answer)
        except dns.resolver.NXDOMAIN as exc:
            raise DnsPermanentError("5.1.2", f"domain {domain} does not exist (NXDOMAIN)") from exc
        except dns.resolver.NoAnswer:
            records = [(0, domain)]  # no MX: the domain's own address is the implicit MX
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise DnsTemporaryError(f"MX lookup for {domain} failed: {exc}") from exc
        if len(records) == 1 and records[0][1] in ("", "."):
            raise DnsPermanentError("5.1.10", f"domain {domain} accepts no mail (null MX)")
        hosts: list[MxHost] = []
        try:
            for preference, name in records:
                addresses = await self._addresses(name)
                if addresses:
                    hosts.append(MxHost(name, preference, addresses))
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise DnsTemporaryError(f"address lookup for the MX of {domain} failed: {exc}") from exc
        if not hosts:
            if records == [(0, domain)]:
                raise DnsPermanentError("5.1.2", f"domain {domain} has no MX and no address record")
            raise DnsTemporaryError(f"no address for any MX host of {domain}")
        return hosts
