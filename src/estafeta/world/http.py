"""The smallest HTTP/1.1 server the simulated world needs: one request per connection, answered from
the request line alone. Subclasses say what each (method, target) gets; this class owns the socket."""

from __future__ import annotations

import asyncio
import contextlib

from estafeta.world.providers import require_loopback

MAX_REQUEST_BYTES = 16 * 1024


class LoopbackHttpServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = require_loopback(host)
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def respond(self, method: str, target: str) -> tuple[str, dict[str, str], bytes]:
        """Status line (e.g. "200 OK"), headers and body for one request."""
        raise NotImplementedError

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_REQUEST_BYTES:
                raise ValueError("request too large")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            status, headers, body = self.respond(method, target)
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            status, headers, body = self.malformed()
        lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items())]
        lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1") + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    def malformed(self) -> tuple[str, dict[str, str], bytes]:
        return "400 Bad Request", {}, b""
