"""JSON request bodies parsed on a worker thread when they are large.

Parsing a few hundred kilobytes of JSON takes milliseconds and a 32 MiB body (`api.max_request_bytes`)
tens of them: on the event loop, every other request would wait that long. The route class below gives
FastAPI a request whose `json()` parses large bodies on a worker thread and small ones in place (a thread
hop costs more than they do). Everything else stays FastAPI's: when the body is read (before the
dependencies, so before the key is checked), which content types are JSON, and the problems answered for
malformed bodies.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

OFF_LOOP_BYTES = 64 * 1024


class _Request(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = (
                await asyncio.to_thread(json.loads, body) if len(body) > OFF_LOOP_BYTES else json.loads(body)
            )
        return self._json


class OffLoopJsonRoute(APIRoute):
    """A route whose large JSON bodies are parsed off the event loop."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            return await handle(_Request(request.scope, request.receive))

        return route_handler
