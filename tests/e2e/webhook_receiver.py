"""A customer's webhook endpoint on loopback: records every request, answers as a test scripts it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass(frozen=True)
class Request:
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    def verify(self, secret: str) -> dict[str, Any]:
        """The payload, once the Standard Webhooks signature checks out (raises otherwise)."""
        return dict(Webhook(secret).verify(self.body.decode(), self.headers))


class WebhookReceiver:
    """Answers with the next scripted status (200 when none is left); with `hang`, answers nothing until
    `release()`, like an endpoint whose server stopped responding."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.statuses: deque[int] = deque()
        self.hang = False
        self.waiting = 0  # requests received and not answered
        self._release = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> WebhookReceiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/hooks"
        return self

    def release(self) -> None:
        self.hang = False
        self._release.set()

    async def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_for(
        self, predicate: Callable[[list[Request]], bool], timeout: float = 15.0
    ) -> list[Request]:
        """Poll until `predicate(requests)` holds (real time bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        while not predicate(self.requests):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"receiver never saw what was expected: {[r.payload for r in self.requests]}"
                )
            await asyncio.sleep(0.02)
        return self.requests

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Request(headers, body))
            if self.hang:
                self.waiting += 1
                await self._release.wait()
                self.waiting -= 1
            status = self.statuses.popleft() if self.statuses else 200
            answer = b'{"ok": true}' if status < 300 else b"upstream trouble"
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: {len(answer)}\r\nConnection: close\r\n\r\n".encode()
                + answer
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
