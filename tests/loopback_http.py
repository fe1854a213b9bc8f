"""A tiny HTTP server on 127.0.0.1 for tests that must see whether a request was made at all."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def http_server(answer: bytes) -> AsyncIterator[tuple[int, list[bytes]]]:
    """Serve `answer` (a whole HTTP response) to every request; yields the port and the request heads."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()
