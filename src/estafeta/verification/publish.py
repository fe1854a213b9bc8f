"""Publishing a domain's records with RFC 2136 dynamic updates, where the platform may edit the zone (the
simulated internet's DNS server, named by `domains.dns_update`).

Each record replaces what serves the same purpose: the DKIM, DMARC and report-consent sets at their names,
the SPF record among the domain's other TXT records; the return path's MX is added if it is absent.
"""

from __future__ import annotations

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.update
from dns.rdtypes.ANY.TXT import TXT

from estafeta.domains import DnsRecord
from estafeta.verification.records import Lookups

_TTL = 300


class PublishError(Exception):
    """The DNS server refused or did not answer the update."""


def _rdata(record: DnsRecord) -> dns.rdata.Rdata:
    if record.type == "TXT":
        raw = record.value.encode()
        return TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [raw[i : i + 255] for i in range(0, len(raw), 255)])
    return dns.rdata.from_text(
        dns.rdataclass.IN, record.type, record.value, origin=dns.name.root, relativize=False
    )


def _server(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
    return host or address, int(port) if port else 53


async def publish(records: list[DnsRecord], server: str, lookups: Lookups, timeout: float = 5.0) -> None:
    """Make DNS hold `records`, one update per zone (found with the platform's resolver)."""
    host, port = _server(server)
    updates: dict[dns.name.Name, dns.update.UpdateMessage] = {}
    for record in records:
        name = dns.name.from_text(record.name)
        zone = await dns.asyncresolver.zone_for_name(name, resolver=lookups.resolver)
        update = updates.setdefault(zone, dns.update.UpdateMessage(zone))
        rdata = _rdata(record)
        if record.type == "MX":
            if rdata.to_text() in (await lookups.records(record.name, "MX") or []):
                continue
        elif record.value.startswith("v=spf1"):
            for old in await lookups.records(record.name, "TXT") or []:
                if old.lower().startswith("v=spf1"):
                    update.delete(name, _rdata(DnsRecord(record.name, "TXT", old, "")))
        else:
            update.delete(name, rdata.rdtype)
        update.add(name, _TTL, rdata)
    await _send(updates, host, port, server, timeout)


async def withdraw(
    names: list[str], rdtype: str, server: str, lookups: Lookups, timeout: float = 5.0
) -> None:
    """Delete the `rdtype` records at `names` (a retired DKIM key's), one update per zone."""
    host, port = _server(server)
    updates: dict[dns.name.Name, dns.update.UpdateMessage] = {}
    for text in names:
        name = dns.name.from_text(text)
        zone = await dns.asyncresolver.zone_for_name(name, resolver=lookups.resolver)
        updates.setdefault(zone, dns.update.UpdateMessage(zone)).delete(name, rdtype)
    await _send(updates, host, port, server, timeout)


async def _send(
    updates: dict[dns.name.Name, dns.update.UpdateMessage], host: str, port: int, server: str, timeout: float
) -> None:
    for zone, update in updates.items():
        try:
            answer = await dns.asyncquery.tcp(update, host, timeout=timeout, port=port)
        except (OSError, dns.exception.DNSException) as exc:
            raise PublishError(f"{server} did not take the update of {zone}: {exc}") from exc
        if answer.rcode() != dns.rcode.NOERROR:
            raise PublishError(f"{server} refused the update of {zone}: {dns.rcode.to_text(answer.rcode())}")
