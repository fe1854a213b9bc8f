"""A sending domain's verification: check its DNS records now, or read the last check. Only verified
domains send (a domain that broke keeps sending while `failing`, until its grace period ends)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from estafeta.api.deps import Caller, account_id, caller, get_core
from estafeta.api.problems import Problem, responses
from estafeta.api.route import ApiRoute
from estafeta.core import Core
from estafeta.domains import DomainError
from estafeta.verification.service import DomainStatus

router = APIRouter(route_class=ApiRoute, prefix="/v1/domains", tags=["domains"])

_NOT_FOUND = {404: {**responses(404)[404], "description": "not a sending domain of this account"}}


class RecordCheckOut(BaseModel):
    check: str = Field(description="what is checked, e.g. `DKIM est2026k`, `SPF 192.0.2.1`, `DMARC`")
    name: str = Field(description="the DNS name looked up")
    type: str = Field(description="the record type (TXT, MX, CNAME)")
    status: Literal["ok", "missing", "wrong", "unknown"] = Field(description="unknown: DNS did not answer")
    expected: str = Field(description="the record to publish at `name`")
    found: list[str] = Field(description="what DNS answered")
    detail: str = Field(description="why, and what to fix")
    required: bool = Field(description="whether the domain needs it to be verified")


class DomainStatusOut(BaseModel):
    domain: str
    state: Literal["pending", "verified", "failing", "unverified"]
    may_send: bool = Field(description="verified, or failing within its grace period")
    checked_at: str | None = Field(description="when the records were last checked")
    failing_since: str | None
    sending_stops_at: str | None = Field(description="while failing: when its mail starts to be refused")
    checks: list[RecordCheckOut] = Field(description="the last check, record by record")


def _out(status: DomainStatus) -> DomainStatusOut:
    return DomainStatusOut.model_validate(status.as_json())


@router.post(
    "/{domain}/verify",
    summary="Check a sending domain's DNS records now",
    response_model=DomainStatusOut,
    responses=_NOT_FOUND,
)
async def verify(
    domain: str, who: Caller = Depends(caller), core: Core = Depends(get_core)
) -> DomainStatusOut:
    try:
        return _out(await core.verification.verify(domain, who.account_id, actor=who.actor))
    except DomainError as exc:
        raise Problem(404, str(exc)) from exc


@router.get(
    "/{domain}",
    summary="A sending domain's verification state and last check",
    response_model=DomainStatusOut,
    responses=_NOT_FOUND,
)
async def status(
    domain: str, account: int = Depends(account_id), core: Core = Depends(get_core)
) -> DomainStatusOut:
    try:
        return _out(await core.verification.status(domain, account))
    except DomainError as exc:
        raise Problem(404, str(exc)) from exc
