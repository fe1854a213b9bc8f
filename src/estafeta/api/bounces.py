"""`/v1/bounces/classify`: what the platform makes of a bounce or complaint message, without recording it."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from estafeta.api.deps import account_id, get_core
from estafeta.api.problems import Problem
from estafeta.bounces.report import classify_message
from estafeta.core import Core

router = APIRouter(prefix="/v1/bounces", tags=["bounces"])

_MEDIA_TYPES = ("message/rfc822", "text/plain")
_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in _MEDIA_TYPES},
    }
}


class Classification(BaseModel):
    verdict: Literal["hard", "soft", "none", "complaint"] = Field(
        description="hard: never retried, suppressed; soft: retried; none: not a bounce (e.g. out of office)"
    )
    reason: str = Field(description="e.g. user-unknown, mailbox-full; for a complaint its feedback type")
    recipients: list[str] = Field(description="the affected recipient(s)")
    status: str | None = Field(description="enhanced status code(s) (RFC 3463), comma-separated")
    source: Literal["dsn", "heuristic", "flufl", "arf"] = Field(
        description="read from a DSN (RFC 3464), from the text, by flufl.bounce, or from an ARF report"
    )


@router.post(
    "/classify",
    response_model=Classification,
    openapi_extra=_BODY_SCHEMA,
    summary="Classify a bounce or complaint message",
    description=(
        "Send the whole raw message (headers and body) as `message/rfc822` or `text/plain`. Nothing is "
        "recorded: this shows what the platform would make of the message if it arrived on the return path."
    ),
)
async def classify(
    request: Request, _: int = Depends(account_id), core: Core = Depends(get_core)
) -> Classification:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _MEDIA_TYPES:
        raise Problem(415, f"send the message as {' or '.join(_MEDIA_TYPES)}, not {media or 'nothing'}")
    limit = core.settings.inbound.max_message_bytes
    raw = await request.body()
    if len(raw) > limit:
        raise Problem(413, f"a message may be at most {limit} bytes; got {len(raw)}")
    if not raw.strip():
        raise Problem(422, "the body is empty", errors=[{"field": "body", "reason": "empty"}])
    return Classification(**classify_message(raw))
