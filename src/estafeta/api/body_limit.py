"""A limit on request bodies, enforced while they stream in and before anything else is done.

A body that declares a larger Content-Length is refused at once, before the API key is checked and without
reading a byte of it. A body without a length (chunked) is counted as it arrives and refused as soon as it
passes the limit, so at most `limit` bytes of it are ever held in memory. Both answers are 413 problems.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from estafeta.api.problems import problem_response


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the limit; the problem handler answers it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"a request body may be at most {limit} bytes (api.max_request_bytes)")


class BodyLimit:
    """ASGI middleware: 413 for request bodies over `limit` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared and declared.isascii() and declared.isdigit() and int(declared) > self.limit:
            too_large = BodyTooLarge(self.limit)
            # The unread body stays on the wire: the connection is closed after the answer.
            response = problem_response(413, str(too_large.detail), headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)
