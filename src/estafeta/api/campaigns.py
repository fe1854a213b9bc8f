"""`/v1/campaigns`: create a campaign from a template, send it now or later, pause, resume, cancel; stats."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from estafeta.api.deps import account_id, get_core, sending_account
from estafeta.api.lists import problem
from estafeta.api.params import SENDER_ADDRESS, Id, IdField, Moment, OneLine, formatted
from estafeta.api.route import ApiRoute
from estafeta.audience.campaigns import MAX_RATE, CampaignRow, CampaignSpec
from estafeta.audience.lists import AudienceError
from estafeta.core import Core

router = APIRouter(route_class=ApiRoute, prefix="/v1/campaigns", tags=["campaigns"])

State = Literal["draft", "scheduled", "sending", "paused", "sent", "cancelled"]


class CampaignIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: OneLine = Field(min_length=1, max_length=200)
    list_id: IdField
    segment_id: IdField | None = None
    from_: Annotated[OneLine, Field(json_schema_extra=formatted(SENDER_ADDRESS))] | None = Field(
        None, alias="from", description="default: the list's From address"
    )
    reply_to: Annotated[OneLine, Field(json_schema_extra=formatted("email"))] | None = None
    subject: OneLine = Field(min_length=1, max_length=998, description="a Jinja2 template")
    html: str | None = Field(None, description="a Jinja2 template (sandboxed, autoescaped)")
    text: str | None = Field(None, description="a Jinja2 template; generated from the HTML when missing")
    rate: float = Field(50.0, gt=0, le=MAX_RATE, description="messages per second at most")
    send_at: Moment | None = Field(None, description="schedule it; without, it stays a draft until sent")


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: Moment


class CampaignOut(BaseModel):
    id: int
    kind: Literal["regular", "reconfirm"]
    name: str
    list_id: int
    segment_id: int | None
    from_: str = Field(serialization_alias="from")
    reply_to: str
    subject: str
    state: State
    rate: float
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str = Field(description="why sending paused on its own, if it did")
    paused_for: Literal["sender", "standing", "error"] | None = Field(
        description="why a paused campaign waits: the sender paused it; the account's standing (a "
        "reputation pause or the warm-up limit: it resumes by itself when that is lifted); or an error "
        "in a message that the sender must fix before resuming"
    )
    recipients_final: bool = Field(
        description="whether every recipient is fixed, so `stats.recipients` no longer grows: recipients are "
        "fixed when sending starts, in chunks (`send` answers after the first one), so a large list's count "
        "grows for a few seconds after the start; false before the start, and for good in a campaign "
        "cancelled before they all were"
    )
    recipients_fixed_at: datetime | None = Field(description="when the last recipient was fixed")
    created_at: datetime


class CampaignStatsOut(CampaignOut):
    stats: dict[str, int] = Field(
        description="recipients by progress (pending, sent, skipped, failed), their deliveries (queued, "
        "deferred, delivered, bounced), unsubscribed, complained, and the messages opened and clicked"
    )
    skipped_reasons: dict[str, int]


class CampaignPage(BaseModel):
    data: list[CampaignOut]


def _out(row: CampaignRow) -> CampaignOut:
    return CampaignOut(
        id=row.id,
        kind=row.kind,  # type: ignore[arg-type]
        name=row.name,
        list_id=row.list_id,
        segment_id=row.segment_id,
        from_=row.from_address,
        reply_to=row.reply_to,
        subject=row.subject,
        state=row.state,  # type: ignore[arg-type]
        rate=row.rate,
        scheduled_at=row.scheduled_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error,
        paused_for=row.paused_for or None,  # type: ignore[arg-type]
        recipients_final=row.recipients_fixed_at is not None,
        recipients_fixed_at=row.recipients_fixed_at,
        created_at=row.created_at,
    )


@router.post(
    "",
    status_code=201,
    response_model=CampaignOut,
    response_model_by_alias=True,
    summary="Create a campaign",
    description="Templates are checked at once: an error answers 422 naming the part and line.",
)
async def create(
    body: CampaignIn, account: int = Depends(account_id), core: Core = Depends(get_core)
) -> CampaignOut:
    spec = CampaignSpec(
        name=body.name,
        list_id=body.list_id,
        subject=body.subject,
        html=body.html,
        text=body.text,
        segment_id=body.segment_id,
        from_address=body.from_,
        reply_to=body.reply_to,
        rate=body.rate,
    )
    try:
        row = await core.audience.campaigns.create(account, spec)
        if body.send_at is not None:
            row = await core.audience.campaigns.schedule(account, row.id, body.send_at)
    except AudienceError as exc:
        raise problem(exc) from exc
    return _out(row)


@router.get("", response_model=CampaignPage, response_model_by_alias=True, summary="List campaigns")
async def list_campaigns(account: int = Depends(account_id), core: Core = Depends(get_core)) -> CampaignPage:
    return CampaignPage(data=[_out(r) for r in await core.audience.campaigns.list(account)])


@router.get(
    "/{campaign_id}",
    response_model=CampaignStatsOut,
    response_model_by_alias=True,
    summary="A campaign's stats",
)
async def get(
    campaign_id: Id, account: int = Depends(account_id), core: Core = Depends(get_core)
) -> CampaignStatsOut:
    try:
        row = await core.audience.campaigns.get(account, campaign_id)
        stats, reasons = await core.audience.campaigns.stats(account, campaign_id)
    except AudienceError as exc:
        raise problem(exc) from exc
    return CampaignStatsOut(**_out(row).model_dump(), stats=stats, skipped_reasons=reasons)


async def _act(core: Core, action: str, account: int, campaign_id: int) -> CampaignOut:
    try:
        row = await getattr(core.audience.campaigns, action)(account, campaign_id)
    except AudienceError as exc:
        raise problem(exc) from exc
    return _out(row)


@router.post(
    "/{campaign_id}/send", response_model=CampaignOut, response_model_by_alias=True, summary="Send now"
)
async def send(
    campaign_id: Id, account: int = Depends(sending_account), core: Core = Depends(get_core)
) -> CampaignOut:
    return await _act(core, "send_now", account, campaign_id)


@router.post(
    "/{campaign_id}/schedule", response_model=CampaignOut, response_model_by_alias=True, summary="Send later"
)
async def schedule(
    campaign_id: Id, body: ScheduleIn, account: int = Depends(sending_account), core: Core = Depends(get_core)
) -> CampaignOut:
    try:
        return _out(await core.audience.campaigns.schedule(account, campaign_id, body.at))
    except AudienceError as exc:
        raise problem(exc) from exc


@router.post(
    "/{campaign_id}/pause", response_model=CampaignOut, response_model_by_alias=True, summary="Pause"
)
async def pause(
    campaign_id: Id, account: int = Depends(account_id), core: Core = Depends(get_core)
) -> CampaignOut:
    return await _act(core, "pause", account, campaign_id)


@router.post(
    "/{campaign_id}/resume", response_model=CampaignOut, response_model_by_alias=True, summary="Resume"
)
async def resume(
    campaign_id: Id, account: int = Depends(account_id), core: Core = Depends(get_core)
) -> CampaignOut:
    return await _act(core, "resume", account, campaign_id)


@router.post(
    "/{campaign_id}/cancel", response_model=CampaignOut, response_model_by_alias=True, summary="Cancel"
)
async def cancel(
    campaign_id: Id, account: int = Depends(account_id), core: Core = Depends(get_core)
) -> CampaignOut:
    return await _act(core, "cancel", account, campaign_id)
