"""DMARC aggregate reports of a sending domain: who sends mail using it, and how it authenticates."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from estafeta.api.deps import account_id, get_core
from estafeta.api.problems import Problem
from estafeta.api.route import ApiRoute
from estafeta.core import Core
from estafeta.domains import DomainError

router = APIRouter(route_class=ApiRoute, prefix="/v1/domains", tags=["domains"])


class DmarcSource(BaseModel):
    ip: str
    ptr: str | None = Field(description="the source's reverse DNS name, when it has one")
    messages: int
    dkim_pass: int = Field(description="messages with DKIM aligned with From and passing")
    spf_pass: int = Field(description="messages with SPF aligned with From and passing")
    dmarc_pass: int = Field(description="messages passing DMARC (aligned DKIM or aligned SPF)")
    ours: bool = Field(description="whether the source is one of the platform's sending addresses")
    reporters: list[str]


class DmarcSummary(BaseModel):
    domain: str
    since: str
    reports: int = Field(description="aggregate reports received for the period")
    reporters: list[str] = Field(description="the receivers that sent them")
    messages: int
    dkim_pass_rate: float | None
    spf_pass_rate: float | None
    dmarc_pass_rate: float | None
    sources: list[DmarcSource] = Field(description="every source IP, most messages first")
    unknown_senders: list[DmarcSource] = Field(
        description="sources that are not the platform's: services not set up, or someone spoofing the domain"
    )


@router.get(
    "/{domain}/dmarc",
    summary="What receivers' DMARC aggregate reports say about a sending domain",
    response_model=DmarcSummary,
)
async def dmarc(
    domain: str,
    days: int = Query(30, ge=1, le=400, description="reports whose period ended in the last N days"),
    account: int = Depends(account_id),
    core: Core = Depends(get_core),
) -> DmarcSummary:
    try:
        summary = await core.dmarc.account_summary(account, domain, days)
    except DomainError as exc:
        raise Problem(404, str(exc)) from exc
    return DmarcSummary.model_validate(summary.as_json())
