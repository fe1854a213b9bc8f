"""Campaigns: create one (a list or one of its segments, a template, on the broadcast stream), schedule,
send, pause, resume, cancel, and each one's results (sent, delivered, bounced, complained, opened, clicked,
unsubscribed), all through the core's audience service."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from estafeta.api.params import Id
from estafeta.audience.campaigns import CampaignSpec
from estafeta.audience.lists import AudienceError
from estafeta.ids import parse_id
from estafeta.users import Identity
from estafeta.web.render import page
from estafeta.web.session import PageError, get_core, reader, sender

router = APIRouter()
ACTIONS = {"send": "send_now", "pause": "pause", "resume": "resume", "cancel": "cancel"}
RESULTS = (
    "recipients",
    "sent",
    "delivered",
    "bounced",
    "complained",
    "opened",
    "clicked",
    "unsubscribed",
    "skipped",
    "failed",
)


async def _campaigns_page(
    request: Request, who: Identity, *, status: int = 200, form: dict[str, str] | None = None, error: str = ""
) -> Response:
    core = get_core(request)
    assert who.account_id is not None
    rows = await core.audience.campaigns.list(who.account_id)
    mailing_lists = await core.audience.lists(who.account_id)
    segments = {m.id: await core.audience.segments(who.account_id, m.id) for m in mailing_lists}
    return page(
        request,
        "campaigns.html",
        who,
        status=status,
        title="Campaigns",
        campaigns=rows,
        lists=mailing_lists,
        segments=segments,
        form=form or {},
        error=error,
    )


@router.get("/campaigns", response_class=HTMLResponse)
async def campaigns(request: Request, who: Identity = Depends(reader)) -> Response:
    return await _campaigns_page(request, who)


def _target(value: str) -> tuple[int, int | None]:
    """The form's audience: `list:<id>` or `segment:<list id>:<segment id>`."""
    kind, _, rest = value.partition(":")
    list_text, _, segment_text = rest.partition(":")
    list_id = parse_id(list_text)
    segment_id = parse_id(segment_text) if kind == "segment" else None
    if list_id is None or kind not in ("list", "segment") or (kind == "segment" and segment_id is None):
        raise AudienceError("audience", "choose a list or a segment")
    return list_id, segment_id


def _at(text: str) -> datetime | None:
    """A `datetime-local` field, read as UTC."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError as exc:
        raise AudienceError("send_at", "use YYYY-MM-DDTHH:MM (UTC)") from exc


@router.post("/campaigns", response_class=HTMLResponse)
async def create_campaign(request: Request, who: Identity = Depends(sender)) -> Response:
    assert who.account_id is not None
    form = {k: str(v) for k, v in (await request.form()).items() if k != "csrf_token"}
    core = get_core(request)
    try:
        list_id, segment_id = _target(form.get("audience", ""))
        spec = CampaignSpec(
            name=form.get("name", ""),
            list_id=list_id,
            segment_id=segment_id,
            reply_to=form.get("reply_to") or None,
            subject=form.get("subject", ""),
            html=form.get("html") or None,
            text=form.get("text") or None,
        )
        send_at = _at(form.get("send_at", ""))
        row = await core.audience.campaigns.create(who.account_id, spec)
        if send_at is not None:
            row = await core.audience.campaigns.schedule(who.account_id, row.id, send_at)
    except AudienceError as exc:
        return await _campaigns_page(
            request, who, status=exc.status, form=form, error=f"{exc.field}: {exc.reason}"
        )
    return RedirectResponse(f"/app/campaigns/{row.id}", status_code=303)


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
async def campaign(
    request: Request, campaign_id: Id, notice: str = "", who: Identity = Depends(reader)
) -> Response:
    assert who.account_id is not None
    core = get_core(request)
    try:
        row = await core.audience.campaigns.get(who.account_id, campaign_id)
        results, skipped = await core.audience.campaigns.stats(who.account_id, campaign_id)
    except AudienceError as exc:
        raise PageError(exc.status, "No such campaign", exc.reason) from exc
    mailing_list = await core.audience.get_list(who.account_id, row.list_id)
    segments = await core.audience.segments(who.account_id, row.list_id)
    return page(
        request,
        "campaign.html",
        who,
        title=row.name,
        campaign=row,
        results=results,
        result_order=RESULTS,
        skipped=skipped,
        segment=next((s for s in segments if s.id == row.segment_id), None),
        mailing_list=mailing_list,
        notice=notice,
    )


@router.post("/campaigns/{campaign_id}/{action}", response_class=HTMLResponse)
async def campaign_action(
    request: Request, campaign_id: Id, action: str, who: Identity = Depends(sender)
) -> Response:
    assert who.account_id is not None
    core = get_core(request)
    try:
        if action == "schedule":
            at = _at(str((await request.form()).get("send_at") or ""))
            if at is None:
                raise AudienceError("send_at", "choose when to send")
            await core.audience.campaigns.schedule(who.account_id, campaign_id, at)
        elif action in ACTIONS:
            await getattr(core.audience.campaigns, ACTIONS[action])(who.account_id, campaign_id)
        else:
            raise PageError(404, "Unknown action", f"A campaign cannot {action}.")
    except AudienceError as exc:
        title = "No such campaign" if exc.status == 404 else "Not possible now"
        raise PageError(exc.status, title, exc.reason) from exc
    return RedirectResponse(f"/app/campaigns/{campaign_id}?notice=Done:+{action}", status_code=303)
