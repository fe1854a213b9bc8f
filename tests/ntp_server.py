"""A loopback NTP server (RFC 5905 server mode, packets built with ntplib) whose clock is off by a chosen
number of seconds: the doctor's clock checks in tests."""

from __future__ import annotations

import asyncio
import time

import ntplib


class NtpServer(asyncio.DatagramProtocol):
    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = ntplib.NTPPacket()
        request.from_data(data)
        received = ntplib.system_to_ntp_time(time.time() + self.offset)
        reply = ntplib.NTPPacket(version=request.version, mode=4)
        reply.stratum = 2
        reply.orig_timestamp = request.tx_timestamp
        reply.ref_timestamp = reply.recv_timestamp = received
        reply.tx_timestamp = ntplib.system_to_ntp_time(time.time() + self.offset)
        assert self.transport is not None
        self.transport.sendto(reply.to_data(), addr)

    @property
    def address(self) -> str:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def start_ntp(offset: float = 0.0) -> NtpServer:
    """Serve on 127.0.0.1 at a free UDP port (`address` says which)."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(lambda: NtpServer(offset), local_addr=("127.0.0.1", 0))
    return protocol
