"""`/v1/bounces/classify`: what the platform makes of a bounce or complaint message, without recording it."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from estafeta.api.deps import account_id, get_core
from estafeta.api.params import TEXT_BODY_SCHEMA, text_body
from estafeta.api.problems import Problem
from estafeta.api.route import ApiRoute
from estafeta.bounces.report import classify_message
from estafeta.core import Core
from estafeta.suppression import policy

router = APIRouter(route_class=ApiRoute, prefix="/v1/bounces", tags=["bounces"])

_MEDIA_TYPES = ("message/rfc822", "text/plain")
_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {media: {"schema": TEXT_BODY_SCHEMA} for media in _MEDIA_TYPES},
    }
}


class Classification(BaseModel):
    verdict: Literal["hard", "soft", "none", "complaint"] = Field(
        description="hard: the address is dead and suppressed; soft: it failed but the address lives; "
        "none: not a failure (a success report, an out-of-office reply); complaint: the recipient complained"
    )
    reason: str = Field(description="e.g. user-unknown, mailbox-full; for a complaint its feedback type")
    recipients: list[str] = Field(description="the affected recipient(s)")
    status: str | None = Field(description="enhanced status code(s) (RFC 3463), comma-separated")
    source: Literal["dsn", "heuristic", "flufl", "arf", "hotmail", "ses", "opt-out", "smtp"] = Field(
        description="read from a DSN (RFC 3464), from the text, by flufl.bounce, from an ARF report, "
        "a Hotmail complaint, an SES notification, an opt-out request or a bare SMTP reply"
    )
    suppresses: Literal["global", "account", "none"] = Field(
        description="what the verdict suppresses under this platform's settings: the address for every "
        "account, on the sending account's list, or nothing"
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
    raw = await text_body(request)
    if len(raw) > limit:
        raise Problem(413, f"a message may be at most {limit} bytes; got {len(raw)}")
    found = classify_message(raw, policy(core.settings.suppression))
    return Classification(**{k: v for k, v in found.items() if k != "evidence"})
