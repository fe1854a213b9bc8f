"""SPF evaluation (RFC 7208) with pyspf, asking the platform's resolvers (`dns_servers`), not the system's.

pyspf looks names up through its module-level `DNSLookup`. It is replaced, once, by a lookup that asks the
resolver `evaluate` set for the calling context (threads started with `asyncio.to_thread` inherit it), and
pyspf's own dnspython lookup otherwise; pyspf keeps counting lookups (the 10-lookup limit) and void
lookups itself.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.resolver
import spf

_resolver: ContextVar[dns.resolver.Resolver | None] = ContextVar("spf_resolver", default=None)
_system_lookup = spf.DNSLookup_dnspython


def _value(qtype: str, rdata: Any) -> Any:
    if qtype in ("A", "AAAA"):
        return rdata.address
    if qtype == "MX":
        return (rdata.preference, rdata.exchange)
    if qtype == "PTR":
        return rdata.target.to_text(True)
    return rdata.strings  # TXT, SPF


def _lookup(
    name: str, qtype: str, strict: bool = True, timeout: float = 30
) -> list[tuple[tuple[str, str], Any]]:
    resolver = _resolver.get()
    if resolver is None:
        return list(_system_lookup(name, qtype, strict, timeout))
    try:
        answer = resolver.resolve(name, qtype, lifetime=timeout)
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        return []
    except dns.exception.DNSException as exc:
        raise spf.TempError(f"DNS {exc}") from exc
    return [((name, qtype), _value(qtype, rdata)) for rdata in answer]


spf.DNSLookup = _lookup


@dataclass(frozen=True)
class SpfResult:
    result: str  # pass | fail | softfail | neutral | none | permerror | temperror
    explanation: str
    lookups: int = 0  # DNS-querying terms evaluated (RFC 7208 4.6.4 allows 10)


def sync_resolver(servers: list[Any], timeout: float) -> dns.resolver.Resolver:
    """A blocking resolver on the same name servers as an asynchronous one (`resolver.nameservers`)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = list(servers)
    resolver.lifetime = timeout
    return resolver


def evaluate(resolver: dns.resolver.Resolver, ip: str, sender: str, helo: str) -> SpfResult:
    """What a receiver concludes for mail from `ip` with MAIL FROM `sender` after EHLO `helo` (blocking)."""
    token = _resolver.set(resolver)
    try:
        query = spf.query(i=ip, s=sender, h=helo, querytime=20)  # as spf.check2 asks
        result, _code, explanation = query.check()
    finally:
        _resolver.reset(token)
    return SpfResult(str(result), str(explanation), int(query.lookups))
