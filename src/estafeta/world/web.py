"""The simulated web: an HTTP forward proxy on loopback that answers for every `http://` URL itself.

The platform's link checks send their requests here (`links.http_proxy`), so redirect chains such as a
URL shortener's can be scripted without any real web server: `redirect(url, location)` makes `url`
answer `301` to `location`; every other URL answers `200 OK` with an empty page.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from estafeta.world.providers import require_loopback

MAX_REQUEST_BYTES = 16 * 1024


class WebProxy:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = require_loopback(host)
        self._redirects: dict[str, str] = {}
        self._requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def redirect(self, url: str, location: str) -> None:
        """Make `url` answer `301 Moved Permanently` to `location` (thread-safe)."""
        with self._lock:
            self._redirects[url] = location

    def requests(self) -> list[tuple[str, str]]:
        """(method, URL) of every request so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._redirects.clear()
            self._requests.clear()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def answer(self, method: str, target: str) -> tuple[str, dict[str, str]]:
        with self._lock:
            self._requests.append((method, target))
            location = self._redirects.get(target)
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", {}
        if location is not None:
            return "301 Moved Permanently", {"Location": location}
        return "200 OK", {"Content-Type": "text/html"}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_REQUEST_BYTES:
                raise ValueError("request too large")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            status, headers = self.answer(method, target)
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            status, headers = "400 Bad Request", {}
        lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items())]
        lines += ["Content-Length: 0", "Connection: close", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1"))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
