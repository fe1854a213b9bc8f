"""RFC 9457 problem details: every error the API returns is `application/problem+json`."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from estafeta.core import DatabaseBusy

PROBLEM = "application/problem+json"
TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "what kind of problem, e.g. `/problems/not-found`"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what went wrong with this request"},
        "errors": {
            "type": "array",
            "description": "one entry per field that was refused",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
}
COMMON_STATUSES = (400, 401, 403, 404, 409, 413, 415, 422, 429, 503)
"""The problems any route may answer: malformed or refused input, credentials, a missing resource, a conflict,
a body over the limit or of the wrong type, throttling, and 503 (with `Retry-After`) while the shared
limits cannot be checked (the cluster's Redis is unreachable: requests are refused, never let through) or
while a SQLite database stays locked by other writers beyond `sqlite_busy_timeout` (nothing was stored)."""


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting `application/problem+json` answers with these statuses."""
    return {
        status: {
            "description": TITLES[status],
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


class Problem(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.headers = headers
        self.kind = kind


def problem_response(
    status: int,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    kind: str | None = None,
) -> JSONResponse:
    title = TITLES.get(status, "Error")
    body: dict[str, Any] = {
        "type": f"/problems/{kind or title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """`("body", "messages", 2, "to", 0)` → `messages[2].to[0]`."""
    out = ""
    for part in loc:
        if part in ("body", "query", "path", "header"):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def validation_errors(
    exc: ValidationError | RequestValidationError, prefix: tuple[Any, ...] = ()
) -> list[dict[str, str]]:
    return [{"field": field_path((*prefix, *err["loc"])), "reason": err["msg"]} for err in exc.errors()]


def malformed_json(exc: RequestValidationError) -> str | None:
    """Where and how the body broke as JSON, as the parser says it (`invalid JSON at line 3, column 7:
    Expecting ',' delimiter`); None when the body parsed. FastAPI names only a character offset."""
    for err in exc.errors():
        loc = err.get("loc", ())
        if (
            err["type"] == "json_invalid"
            and len(loc) == 2
            and isinstance(loc[1], int)
            and isinstance(exc.body, str)
        ):
            broken = json.JSONDecodeError(err.get("ctx", {}).get("error", "malformed"), exc.body, loc[1])
            return f"invalid JSON at line {broken.lineno}, column {broken.colno}: {broken.msg}"
    return None


def allowed_methods(request: Request) -> str | None:
    """The `Allow` header for a 405: the methods the OpenAPI document lists for this path. Where a fixed
    path and a template both match (`/v1/messages/cancel`, `/v1/messages/{message_id}`), the one with the
    fewest parameters names the resource, as OpenAPI says. None for a path the document does not list."""
    found: list[tuple[int, set[str]]] = []
    for template, operations in request.app.openapi()["paths"].items():
        pattern = re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            found.append((template.count("{"), {method.upper() for method in operations}))
    if not found:
        return None
    fewest = min(params for params, _ in found)
    return ", ".join(sorted(set().union(*(methods for params, methods in found if params == fewest))))


def install(app: FastAPI) -> None:
    """Answer every error as a problem."""

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, exc.errors, exc.headers, exc.kind)

    @app.exception_handler(DatabaseBusy)
    async def _busy(_: Request, exc: DatabaseBusy) -> JSONResponse:
        detail = "the database is busy with other writers and nothing was stored; try again shortly"
        return problem_response(503, detail, headers={"Retry-After": "1"}, kind="database-busy")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        if (broken := malformed_json(exc)) is not None:
            return problem_response(422, f"body: {broken}", [{"field": "body", "reason": broken}])
        errors = validation_errors(exc)
        return problem_response(422, "; ".join(f"{e['field']}: {e['reason']}" for e in errors), errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = exc.headers
        if exc.status_code == 405 and (allowed := allowed_methods(request)):
            headers = {**(headers or {}), "Allow": allowed}
        return problem_response(exc.status_code, str(exc.detail), headers=headers)
