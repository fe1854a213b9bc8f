"""The route class of every API route: the key is checked before the body is read, and large JSON bodies
are parsed on a worker thread.

FastAPI reads and parses a request's body before it runs the route's dependencies, so before the API key is
checked: anyone could make the server read and parse a body up to `api.max_request_bytes` (32 MiB). The
route class runs the route's key check (the `estafeta.api.deps` dependency it names) first; the dependency
reuses that answer when FastAPI runs it again, so a request is still counted once against the rate.

Parsing a few hundred kilobytes of JSON takes milliseconds and a 32 MiB body tens of them: on the event
loop, every other request would wait that long. The request FastAPI is given parses large bodies on a worker
thread and small ones in place (a thread hop costs more than they do). Everything else stays FastAPI's:
which content types are JSON, and the problems answered for malformed bodies.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from estafeta.api.deps import KEY_CHECKS, KeyCheck, check_key

OFF_LOOP_BYTES = 64 * 1024


class _Request(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = (
                await asyncio.to_thread(json.loads, body) if len(body) > OFF_LOOP_BYTES else json.loads(body)
            )
        return self._json


def _key_check(dependant: Dependant) -> KeyCheck | None:
    """The key check among the route's dependencies (searched depth first), if it has one."""
    for dependency in dependant.dependencies:
        if dependency.call in KEY_CHECKS:
            return dependency.call  # type: ignore[return-value]
        if (found := _key_check(dependency)) is not None:
            return found
    return None


class ApiRoute(APIRoute):
    """A route that checks the API key before reading the body and parses large bodies off the loop."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        key_check = _key_check(self.dependant)

        async def route_handler(request: Request) -> Response:
            request = _Request(request.scope, request.receive)
            if key_check is not None:
                await check_key(request, key_check)
            return await handle(request)

        return route_handler
