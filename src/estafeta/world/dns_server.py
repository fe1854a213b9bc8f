"""An authoritative DNS server for the world's zones, over UDP and TCP on one loopback port.

Stock resolvers (dnspython's included) query UDP first and retry over TCP when the answer comes back
truncated, so both transports are served, and UDP answers honour the 512-byte / EDNS payload limit.

It also takes RFC 2136 dynamic updates (add a record, delete a set, a record or a name; no prerequisites),
which is how a sandbox platform publishes its sending domains' records. The server only listens on
loopback, so only this machine can update it.
"""

from __future__ import annotations

import asyncio
import errno
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rrset
import dns.update

from estafeta.world.zone import WorldZone

UDP_LIMIT = 512
TCP_LIMIT = 65535
_PORT_ATTEMPTS = 8


def _rrset(name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype)
    rrset.update(rdataset)
    return rrset


def answer(zone: WorldZone, wire: bytes, *, udp: bool) -> bytes | None:
    """The wire-format reply to one query, or None when the bytes are not a query we can answer."""
    try:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
    except dns.exception.DNSException:
        return None
    if isinstance(query, dns.update.UpdateMessage):
        response.set_rcode(apply_update(zone, query))
    elif query.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
    elif len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
    elif query.question[0].rdclass != dns.rdataclass.IN:
        response.set_rcode(dns.rcode.REFUSED)
    else:
        question = query.question[0]
        found = zone.lookup(question.name, question.rdtype)
        response.set_rcode(found.rcode)
        if found.rcode != dns.rcode.REFUSED:
            response.flags |= dns.flags.AA
        if found.rdataset is not None:
            response.answer.append(_rrset(question.name, found.rdataset))
        elif found.soa is not None and found.soa_name is not None:
            response.authority.append(_rrset(found.soa_name, found.soa))
    limit = TCP_LIMIT
    if udp:
        limit = max(UDP_LIMIT, query.payload) if query.edns >= 0 else UDP_LIMIT
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        # RFC 1035 4.2.1 / RFC 2181 9: send what fits (here: nothing) with TC so the client retries on TCP.
        response.answer.clear()
        response.authority.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit)


def apply_update(zone: WorldZone, update: dns.update.UpdateMessage) -> dns.rcode.Rcode:
    """Apply an RFC 2136 update to the zone it names: the rcode of the answer."""
    if len(update.zone) != 1 or not zone.serves(update.zone[0].name):
        return dns.rcode.NOTAUTH
    if update.prerequisite:
        return dns.rcode.NOTIMP
    origin = update.zone[0].name
    if any(not rrset.name.is_subdomain(origin) for rrset in update.update):
        return dns.rcode.NOTZONE
    for rrset in update.update:
        if rrset.deleting == dns.rdataclass.NONE:
            for rdata in rrset:
                zone.discard_rdata(rrset.name, rdata)
        elif rrset.deleting == dns.rdataclass.ANY:
            zone.remove_rdataset(rrset.name, rrset.rdtype)
        else:
            for rdata in rrset:
                zone.add_rdata(rrset.name, rdata, rrset.ttl)
    return dns.rcode.NOERROR


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, zone: WorldZone) -> None:
        self._zone = zone
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = answer(self._zone, data, udp=True)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)


class _TcpProtocol(asyncio.Protocol):
    """RFC 1035 4.2.2 framing: each message is preceded by its two-byte length; several may pipeline."""

    def __init__(self, zone: WorldZone, connections: set[asyncio.Transport]) -> None:
        self._zone = zone
        self._connections = connections
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's does not subclass asyncio.Transport, hence no isinstance check)
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self._transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._connections.discard(self._transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        while len(self._buffer) >= 2:
            size = int.from_bytes(self._buffer[:2], "big")
            if len(self._buffer) < 2 + size:
                return
            wire = bytes(self._buffer[2 : 2 + size])
            del self._buffer[: 2 + size]
            reply = answer(self._zone, wire, udp=False)
            if reply is None:
                self._transport.close()
                return
            self._transport.write(len(reply).to_bytes(2, "big") + reply)


class DnsServer:
    """Serves a `WorldZone` on (host, port) over UDP and TCP in the running event loop."""

    def __init__(self, zone: WorldZone, host: str = "127.0.0.1", port: int = 0) -> None:
        self._zone = zone
        self._host = host
        self._requested_port = port
        self._port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.Transport] = set()

    @property
    def address(self) -> tuple[str, int]:
        return self._host, self._port

    async def start(self) -> None:
        """Bind UDP, then TCP on the same port; with port 0, retry when TCP finds that port taken."""
        loop = asyncio.get_running_loop()
        for _ in range(_PORT_ATTEMPTS):
            udp, _protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self._zone), local_addr=(self._host, self._requested_port)
            )
            port = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await loop.create_server(
                    lambda: _TcpProtocol(self._zone, self._connections), self._host, port
                )
            except OSError as error:
                udp.close()
                if error.errno != errno.EADDRINUSE or self._requested_port:
                    raise
                continue
            self._udp, self._port = udp, port
            return
        raise OSError(errno.EADDRINUSE, f"no port free for both UDP and TCP on {self._host}")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for transport in list(self._connections):
                transport.close()
            await self._tcp.wait_closed()
            self._tcp = None
