"""`/v1/lint`: check a ready-made message against the sender guidelines without sending it."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from estafeta.api.deps import account_id
from estafeta.api.params import TEXT_BODY_SCHEMA, text_body
from estafeta.api.route import ApiRoute
from estafeta.api.schemas import LintFindingOut
from estafeta.compliance.linter import LintContext, lint_raw

router = APIRouter(route_class=ApiRoute, prefix="/v1/lint", tags=["compliance"])

_RFC822_BODY = {
    "requestBody": {"required": True, "content": {"message/rfc822": {"schema": TEXT_BODY_SCHEMA}}}
}


class LintOut(BaseModel):
    ok: bool
    findings: list[LintFindingOut]


@router.post(
    "",
    response_model=LintOut,
    summary="Lint a message",
    description="The body is the message as it would go on the wire (`message/rfc822`). `ok` is false when a "
    "finding is an error.",
    openapi_extra=_RFC822_BODY,
)
async def lint(
    request: Request,
    stream: Literal["transactional", "broadcast"] | None = Query(
        None, description="default: from its headers"
    ),
    _: int = Depends(account_id),
) -> LintOut:
    findings = lint_raw(await text_body(request), LintContext(stream=stream))
    return LintOut(
        ok=not any(f.severity == "error" for f in findings),
        findings=[LintFindingOut(**f.as_dict()) for f in findings],
    )
