"""Whether a sending domain's records are published: DKIM (the exact key), SPF and DMARC (present).

Asked of the platform's own resolvers (`settings.dns_servers`), uncached, so a record that was just
published shows at once. Receivers check the same records; mail from a domain without them is spam-foldered
or refused.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

from estafeta.config import Settings
from estafeta.delivery.mx import make_resolver
from estafeta.domains import DnsRecord, DomainRow, dns_records


@dataclass(frozen=True)
class RecordStatus:
    record: DnsRecord
    status: str  # published | missing | different | unknown (the lookup failed)
    found: list[str]


def _txt(rdata: object) -> str:
    return b"".join(rdata.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]


def _compact(value: str) -> str:
    return "".join(value.split()).lower()


async def _lookup(resolver: dns.asyncresolver.Resolver, name: str) -> list[str] | None:
    try:
        answer = await resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException:
        return None
    return [_txt(r) for r in answer]


def _status(record: DnsRecord, found: list[str] | None) -> str:
    if found is None:
        return "unknown"
    if record.purpose.startswith("DKIM"):
        wanted = _compact(record.value)
        return (
            "published"
            if any(_compact(v) == wanted for v in found)
            else ("different" if found else "missing")
        )
    prefix = record.value.split(";")[0].split()[0].lower()  # v=spf1 | v=dmarc1
    return "published" if any(v.strip().lower().startswith(prefix) for v in found) else "missing"


async def check(domain: DomainRow, settings: Settings, timeout: float = 2.0) -> list[RecordStatus]:
    """Each record the domain should publish, with what DNS answers now (looked up together)."""
    resolver = make_resolver(settings.dns_servers)
    resolver.cache = None
    resolver.lifetime = timeout
    records = dns_records(domain, settings)
    answers = await asyncio.gather(*(_lookup(resolver, record.name) for record in records))
    return [
        RecordStatus(record, _status(record, found), found or [])
        for record, found in zip(records, answers, strict=True)
    ]
