"""`/v1/stats`: the account's sending statistics and its receivers' Postmaster figures."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from estafeta import stats
from estafeta.api.deps import account_id, get_core
from estafeta.api.params import Moment
from estafeta.api.problems import Problem
from estafeta.api.route import ApiRoute
from estafeta.core import Core

router = APIRouter(route_class=ApiRoute, prefix="/v1/stats", tags=["statistics"])


class Rates(BaseModel):
    bounce: float | None = Field(description="hard bounces / (delivered + bounced)")
    complaint: float | None = Field(description="complaints / delivered")


class GroupOut(BaseModel):
    bucket: datetime | None = Field(description="start of the hour or day; null with bucket=none")
    domain: str | None = None
    stream: str | None = None
    campaign: str | None = None
    provider: str | None = None
    counts: dict[str, int]
    rates: Rates


class TotalOut(BaseModel):
    counts: dict[str, int]
    rates: Rates


class PostmasterOut(BaseModel):
    provider: str
    domain: str
    date: date
    messages: int
    spam_rate: float
    dkim_pass_rate: float
    spf_pass_rate: float
    domain_reputation: Literal["HIGH", "MEDIUM", "LOW", "BAD"]


class StatsOut(BaseModel):
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    bucket: str
    group_by: list[str]
    data: list[GroupOut]
    total: TotalOut
    postmaster: list[PostmasterOut] = Field(
        description="what receivers report for the account's sending domains on these days"
    )


@router.get(
    "",
    response_model=StatsOut,
    response_model_by_alias=True,
    summary="Sending statistics",
    description=(
        "Counts of every event type (plus `sent`, `bounced_hard`, `bounced_soft`, `opened_machine`, "
        "`clicked_machine`) and bounce/complaint rates per time bucket and the chosen dimensions, computed "
        "from the event log; the receivers' own figures (spam rate, DKIM/SPF pass rates, reputation) under "
        "`postmaster`. Default period: the last 24 hours by hour, else the last 30 days."
    ),
)
async def get_stats(
    group_by: list[Literal["domain", "stream", "campaign", "provider"]] = Query(
        default_factory=list, description="dimensions (repeatable)"
    ),
    bucket: Literal["hour", "day", "none"] = "day",
    from_: Annotated[Moment | None, Query(alias="from", description="start, inclusive (ISO 8601)")] = None,
    to: Annotated[Moment | None, Query(description="end, exclusive (ISO 8601)")] = None,
    account: int = Depends(account_id),
    core: Core = Depends(get_core),
) -> StatsOut:
    default_from, default_to = stats.default_period(core.clock.now(), bucket)
    span = default_to - default_from
    since = from_ or (to - span if to else default_from)
    until = to or (since + span if from_ and from_ >= default_to else default_to)
    if since >= until:
        raise Problem(422, "from must be before to", errors=[{"field": "from", "reason": "not before to"}])
    dimensions = list(dict.fromkeys(group_by))
    found = await core.stats(account, since, until, dimensions, bucket)
    return StatsOut(
        from_=found.since,
        to=found.until,
        bucket=found.bucket,
        group_by=found.group_by,
        data=[
            GroupOut(bucket=g.bucket, **g.dimensions, counts=g.counts, rates=Rates(**g.rates))
            for g in found.groups
        ],
        total=TotalOut(counts=found.total, rates=Rates(**stats.rates(found.total))),
        postmaster=[
            PostmasterOut(
                provider=p.provider,
                domain=p.domain,
                date=p.day,
                messages=p.messages,
                spam_rate=p.spam_rate,
                dkim_pass_rate=p.dkim_pass_rate,
                spf_pass_rate=p.spf_pass_rate,
                domain_reputation=p.reputation,  # type: ignore[arg-type]
            )
            for p in found.postmaster
        ],
    )
