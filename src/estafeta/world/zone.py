"""The world's DNS data: the `test.` zone and the `127.in-addr.arpa.` reverse zone, editable while served.

Tests and the demo publish DKIM keys and other records while servers are answering from another thread,
so every read and write goes through one lock, and writes replace rdatasets instead of mutating them
(an answer being rendered keeps the rdataset it looked up).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.zone
from dns.rdtypes.ANY.TXT import TXT

ORIGIN = dns.name.from_text("test.")
REVERSE_ORIGIN = dns.name.from_text("127.in-addr.arpa.")
NAMESERVER = "ns.test."
# Records are edited live, so resolvers should not cache "no such name" (SOA minimum = negative TTL).
NEGATIVE_TTL = 0
_IN = dns.rdataclass.IN


def _apex(nameserver_address: str | None, negative_ttl: int) -> str:
    lines = [
        f"@ 3600 IN SOA {NAMESERVER} hostmaster.test. 1 3600 600 86400 {negative_ttl}",
        f"@ 3600 IN NS {NAMESERVER}",
    ]
    if nameserver_address is not None:
        lines.append(f"{NAMESERVER} 3600 IN A {nameserver_address}")
    return "\n".join(lines) + "\n"


def txt_strings(value: str) -> list[bytes]:
    """Split a TXT value into the 255-byte character-strings DNS requires (DKIM keys exceed one)."""
    raw = value.encode()
    return [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]


def make_rdata(rdtype: str | dns.rdatatype.RdataType, value: str) -> dns.rdata.Rdata:
    """Rdata from presentation text; names in it are absolute, TXT values are plain (unquoted) text."""
    rdtype = dns.rdatatype.RdataType.make(rdtype)
    if rdtype == dns.rdatatype.TXT:
        return TXT(_IN, rdtype, txt_strings(value))
    return dns.rdata.from_text(_IN, rdtype, value, origin=dns.name.root, relativize=False)


def zone_line(name: str, rdtype: str, value: str, ttl: int = 300) -> str:
    """One zone-file line for `name`, for `World(extra_zone=...)`: TXT values come out split and quoted."""
    absolute = dns.name.from_text(name).to_text()
    return f"{absolute} {ttl} IN {rdtype.upper()} {make_rdata(rdtype, value).to_text()}"


@dataclass(frozen=True)
class Lookup:
    """What the zone says about one (name, type): the rcode, the records if any, the SOA for negatives."""

    rcode: dns.rcode.Rcode
    rdataset: dns.rdataset.Rdataset | None = None
    soa_name: dns.name.Name | None = None
    soa: dns.rdataset.Rdataset | None = None


class WorldZone:
    """The authoritative data for `test.` and `127.in-addr.arpa.`, safe to edit from any thread."""

    def __init__(
        self,
        forward_text: str,
        reverse_text: str,
        nameserver_address: str | None = None,
        negative_ttl: int = NEGATIVE_TTL,
    ) -> None:
        """`forward_text` is relative to `test.`, `reverse_text` to `127.in-addr.arpa.` (no SOA/NS needed);
        `negative_ttl` is how long resolvers may remember that a name or record does not exist."""
        self._zones = (
            dns.zone.from_text(
                _apex(nameserver_address, negative_ttl) + forward_text, origin=ORIGIN, relativize=False
            ),
            dns.zone.from_text(
                _apex(None, negative_ttl) + reverse_text, origin=REVERSE_ORIGIN, relativize=False
            ),
        )
        self._lock = threading.Lock()
        self.version = 0
        """Counts the edits, so that answers derived from the zone can be cached until the next one."""

    def _zone_for(self, name: dns.name.Name) -> dns.zone.Zone | None:
        for zone in self._zones:
            if name.is_subdomain(zone.origin):
                return zone
        return None

    def _writable_zone(self, name: dns.name.Name) -> dns.zone.Zone:
        zone = self._zone_for(name)
        if zone is None:
            raise ValueError(f"{name} is outside the world's zones ({ORIGIN}, {REVERSE_ORIGIN})")
        return zone

    def add(self, name: str, rdtype: str, value: str, ttl: int = 300) -> None:
        """Add one record to the set at (name, type); the set's TTL becomes `ttl`."""
        self.add_rdata(dns.name.from_text(name), make_rdata(rdtype, value), ttl)

    def add_rdata(self, qname: dns.name.Name, rdata: dns.rdata.Rdata, ttl: int = 300) -> None:
        zone = self._writable_zone(qname)
        with self._lock:
            node = zone.find_node(qname, create=True)
            current = node.get_rdataset(_IN, rdata.rdtype)
            replacement = current.copy() if current is not None else dns.rdataset.Rdataset(_IN, rdata.rdtype)
            replacement.add(rdata)
            replacement.ttl = ttl
            node.replace_rdataset(replacement)
            self.version += 1

    def remove(self, name: str, rdtype: str) -> None:
        """Remove every record of `rdtype` at `name` (the name disappears with its last record)."""
        self.remove_rdataset(dns.name.from_text(name), dns.rdatatype.RdataType.make(rdtype))

    def remove_rdataset(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> None:
        """Remove the records of `rdtype` at `qname`; `ANY` removes every record of the name."""
        zone = self._writable_zone(qname)
        with self._lock:
            if rdtype == dns.rdatatype.ANY:
                zone.delete_node(qname)
            else:
                zone.delete_rdataset(qname, rdtype)
            self.version += 1

    def discard_rdata(self, qname: dns.name.Name, rdata: dns.rdata.Rdata) -> None:
        """Remove one record (other records of its set stay)."""
        zone = self._writable_zone(qname)
        with self._lock:
            node = zone.get_node(qname)
            current = node.get_rdataset(_IN, rdata.rdtype) if node is not None else None
            if current is None or rdata not in current:
                return
            replacement = current.copy()
            replacement.discard(rdata)
            if replacement:
                node.replace_rdataset(replacement)  # type: ignore[union-attr]
            else:
                zone.delete_rdataset(qname, rdata.rdtype)
            self.version += 1

    def serves(self, name: dns.name.Name) -> bool:
        """Whether `name` is the origin of one of the world's zones (an RFC 2136 update's zone)."""
        return any(name == zone.origin for zone in self._zones)

    def txt(self, name: str) -> list[str]:
        """Each TXT record at `name` with its character-strings joined, as DKIM and SPF readers need."""
        rdataset = self.lookup(dns.name.from_text(name), dns.rdatatype.TXT).rdataset
        if rdataset is None:
            return []
        return [b"".join(rdata.strings).decode(errors="replace") for rdata in rdataset]

    def lookup(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> Lookup:
        """Authoritative answer data: REFUSED outside our zones, NXDOMAIN for unknown names."""
        zone = self._zone_for(qname)
        if zone is None:
            return Lookup(dns.rcode.REFUSED)
        with self._lock:
            soa = zone.get_rdataset(zone.origin, dns.rdatatype.SOA)
            node = zone.get_node(qname)
            if node is not None:
                rdataset = node.get_rdataset(_IN, rdtype)
                if rdataset is not None:
                    return Lookup(dns.rcode.NOERROR, rdataset)
                return Lookup(dns.rcode.NOERROR, None, zone.origin, soa)
            # A name that only has names below it (e.g. `_domainkey.acme.test.`) exists, with no data.
            exists = any(name.is_subdomain(qname) for name in zone.nodes)
        return Lookup(dns.rcode.NOERROR if exists else dns.rcode.NXDOMAIN, None, zone.origin, soa)
