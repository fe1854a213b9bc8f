"""The smallest HTTP/1.1 server the simulated world needs: one request per connection, answered from
the request line alone (or, for servers that override `respond_to_request`, with its headers and body too).
Subclasses say what each (method, target) gets; this class owns the socket, and TLS when given one."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from estafeta.world.providers import require_loopback

MAX_REQUEST_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024


class LoopbackHttpServer:
    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self._host = require_loopback(host)
        self._tls = tls
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, 0, ssl=self._tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def respond(self, method: str, target: str) -> tuple[str, dict[str, str], bytes]:
        """Status line (e.g. "200 OK"), headers and body for one request."""
        raise NotImplementedError

    def respond_to_request(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[str, dict[str, str], bytes]:
        """Like `respond`, for servers that need the request's headers (lower-cased names) and body."""
        return self.respond(method, target)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_REQUEST_BYTES:
                raise ValueError("request too large")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            fields = dict(line.split(":", 1) for line in lines if ":" in line)
            request_headers = {name.strip().lower(): value.strip() for name, value in fields.items()}
            length = int(request_headers.get("content-length", "0"))
            if not 0 <= length <= MAX_BODY_BYTES:
                raise ValueError("body too large")
            request_body = await reader.readexactly(length) if length else b""
            status, headers, body = self.respond_to_request(method, target, request_headers, request_body)
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            status, headers, body = self.malformed()
        except (ConnectionError, ssl.SSLError):  # e.g. a client that did not trust the certificate
            writer.close()
            return
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
