"""A loopback SMTP sink for benchmarks: accepts every message, keeps nothing, counts what it got.

The simulated internet's providers check DKIM, SPF and rate limits, so a figure measured against them is
partly the world's own CPU. Benchmarks deliver here instead: one small protocol object per connection,
ESMTP with PIPELINING (as Postfix's `smtp-sink`), and a DNS server that points the benchmark's recipient
domains at it. Estafeta finds the sink through MX records; Postfix through `relayhost`, so both relay to
the same receiver.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any, cast

from estafeta import loop as event_loop
from estafeta.bench.resources import end_with_parent
from estafeta.world.dns_server import DnsServer
from estafeta.world.zone import WorldZone

HOST = "127.0.0.1"
SINK_NAME = "sink.test"
START_TIMEOUT = 120.0  # a loaded machine takes a while to import and start it
_EHLO = (
    f"250-{SINK_NAME}\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n"
    "250 SIZE 104857600\r\n"
).encode()
_END_OF_DATA = b"\r\n.\r\n"


class SinkSession(asyncio.Protocol):
    """One client connection: replies to pipelined commands in order, counts each message's final dot."""

    def __init__(self, received: Synchronized[int]) -> None:
        self.received = received
        self.buffer = bytearray()
        self.in_data = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(f"220 {SINK_NAME} ESMTP sink\r\n".encode())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies = bytearray()
        closing = False
        while self.buffer:
            if self.in_data:
                end = self.buffer.find(_END_OF_DATA)
                if end < 0:
                    # Keep only what may hold the start of the terminator: the body is not kept.
                    del self.buffer[: max(0, len(self.buffer) - len(_END_OF_DATA))]
                    break
                del self.buffer[: end + len(_END_OF_DATA)]
                self.in_data = False
                self.received.value += 1
                replies += b"250 2.0.0 Ok: queued\r\n"
                continue
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                break
            verb = bytes(self.buffer[:4]).upper()
            del self.buffer[: line_end + 2]
            if verb == b"DATA":
                self.in_data = True
                # The message starts on the next line; its terminator may be the very first line.
                self.buffer[:0] = b"\r\n"
                replies += b"354 End data with <CR><LF>.<CR><LF>\r\n"
            elif verb == b"EHLO":
                replies += _EHLO
            elif verb == b"QUIT":
                replies += b"221 2.0.0 Bye\r\n"
                closing = True
                break
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP", b"HELO"):
                replies += b"250 2.0.0 Ok\r\n"
            else:
                replies += b"502 5.5.2 Command not recognized\r\n"
        assert self.transport is not None
        if replies:
            self.transport.write(bytes(replies))
        if closing:
            self.transport.close()


def sink_zone(domains: Sequence[str]) -> WorldZone:
    """DNS data sending every recipient domain (under `.test`) to the sink at 127.0.0.1. It does not change
    during a run, so resolvers may remember its negative answers (the sink has no AAAA record) as they would
    a real zone's, instead of asking again at each new connection."""
    forward = [f"{SINK_NAME}. 300 IN A {HOST}"]
    forward += [f"{domain}. 300 IN MX 10 {SINK_NAME}." for domain in domains]
    return WorldZone("\n".join(forward) + "\n", "", negative_ttl=300)


async def serve_sink(received: Synchronized[int], port: int = 0) -> asyncio.Server:
    """Listen on 127.0.0.1:`port` (0: any free port)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: SinkSession(received), HOST, port, backlog=1024)


@dataclass(frozen=True)
class SinkAddresses:
    smtp_port: int
    dns_address: tuple[str, int]


def _sink_main(
    domains: list[str], port: int, received: Synchronized[int], ready: Connection, stop: Any
) -> None:
    """Child process: DNS and the SMTP sink until `stop` is set (or the benchmark process ends)."""
    end_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the sink, not a Ctrl-C on the console

    async def main() -> None:
        dns = DnsServer(sink_zone(domains))
        await dns.start()
        server = await serve_sink(received, port)
        ready.send(SinkAddresses(server.sockets[0].getsockname()[1], dns.address))
        while not stop.is_set():
            await asyncio.sleep(0.1)
        server.close()
        await dns.stop()

    event_loop.run(main())


class SinkProcess:
    """The sink and its DNS server in a child process, so that receiving does not use the sender's core."""

    def __init__(self, domains: Sequence[str], port: int = 0) -> None:
        context = multiprocessing.get_context("spawn")
        self._received: Synchronized[int] = context.Value("q", 0, lock=False)  # type: ignore[assignment]
        self._stop = context.Event()
        receiver, sender = context.Pipe(duplex=False)
        self._ready = receiver
        self._process = context.Process(
            target=_sink_main,
            args=(list(domains), port, self._received, sender, self._stop),
            name="estafeta-bench-sink",
            daemon=True,
        )
        self._addresses: SinkAddresses | None = None

    @property
    def addresses(self) -> SinkAddresses:
        assert self._addresses is not None, "the sink is not started"
        return self._addresses

    def start(self) -> SinkAddresses:
        self._process.start()
        try:
            if not self._ready.poll(START_TIMEOUT):
                raise EOFError
            self._addresses = self._ready.recv()
        except EOFError:
            self.stop()
            raise RuntimeError("the benchmark sink did not start") from None
        return self.addresses

    @property
    def received(self) -> int:
        return int(self._received.value)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    async def wait_for(self, count: int, timeout: float, progress: Any = None) -> float:
        """Wait until `count` messages arrived (or `timeout` passed); returns when the last one did."""
        deadline = time.perf_counter() + timeout
        last, last_at = -1, time.perf_counter()
        while time.perf_counter() < deadline:
            now, received = time.perf_counter(), self.received
            if received != last:
                last, last_at = received, now
                if progress is not None:
                    progress(received)
            if received >= count:
                break
            await asyncio.sleep(0.01)
        return last_at

    def stop(self) -> None:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    def __enter__(self) -> SinkProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
