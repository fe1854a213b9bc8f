"""Lists and their contacts; campaigns: create, schedule, send, pause, resume, cancel, and their results."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from estafeta.api.params import AfterId, Id
from estafeta.audience.campaigns import CampaignSpec
from estafeta.audience.lists import AudienceError
from estafeta.ids import parse_id
from estafeta.users import Identity
from estafeta.web.render import page
from estafeta.web.session import PageError, get_core, reader, sender

router = APIRouter()
CONTACTS_PAGE = 100
ACTIONS = {"send": "send_now", "pause": "pause", "resume": "resume", "cancel": "cancel"}


@router.get("/lists", response_class=HTMLResponse)
async def lists(request: Request, who: Identity = Depends(reader)) -> Response:
    core = get_core(request)
    assert who.account_id is not None
    rows = await core.audience.lists(who.account_id)
    return page(request, "lists.html", who, title="Lists", lists=rows, form_url=core.audience.links.form_url)


@router.get("/lists/{list_id}", response_class=HTMLResponse)
async def contacts(
    request: Request, list_id: Id, status: str = "", after: AfterId = 0, who: Identity = Depends(reader)
) -> Response:
    core = get_core(request)
    assert who.account_id is not None
    try:
        mailing_list = await core.audience.get_list(who.account_id, list_id)
    except AudienceError as exc:
        raise PageError(404, "No such list", f"There is no list {list_id} in this account.") from exc
    if status not in ("", "unconfirmed", "subscribed", "unsubscribed"):
        raise PageError(422, "Unknown status", "status: unconfirmed, subscribed or unsubscribed")
    rows = await core.audience.contacts(
        list_id, status=status or None, after_id=after, limit=CONTACTS_PAGE + 1
    )
    next_url = ""
    if len(rows) > CONTACTS_PAGE:
        rows = rows[:CONTACTS_PAGE]
        next_url = f"/app/lists/{list_id}?status={status}&after={rows[-1][0].id}"
    return page(
        request,
        "contacts.html",
        who,
        title=mailing_list.name,
        mailing_list=mailing_list,
        rows=rows,
        shown=status,
        next_url=next_url,
    )


@router.get("/campaigns", response_class=HTMLResponse)
async def campaigns(request: Request, who: Identity = Depends(reader)) -> Response:
    core = get_core(request)
    assert who.account_id is not None
    rows = await core.audience.campaigns.list(who.account_id)
    mailing_lists = await core.audience.lists(who.account_id)
    return page(
        request, "campaigns.html", who, title="Campaigns", campaigns=rows, lists=mailing_lists, form={}
    )


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
        list_id = parse_id(form.get("list_id", "")) or 0
        spec = CampaignSpec(
            name=form.get("name", ""),
            list_id=list_id,
            subject=form.get("subject", ""),
            html=form.get("html") or None,
            text=form.get("text") or None,
        )
        send_at = _at(form.get("send_at", ""))
        row = await core.audience.campaigns.create(who.account_id, spec)
        if send_at is not None:
            row = await core.audience.campaigns.schedule(who.account_id, row.id, send_at)
    except (AudienceError, ValueError) as exc:
        reason = f"{exc.field}: {exc.reason}" if isinstance(exc, AudienceError) else "list: choose a list"
        rows = await core.audience.campaigns.list(who.account_id)
        mailing_lists = await core.audience.lists(who.account_id)
        return page(
            request,
            "campaigns.html",
            who,
            status=422,
            title="Campaigns",
            campaigns=rows,
            lists=mailing_lists,
            form=form,
            error=reason,
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
    return page(
        request,
        "campaign.html",
        who,
        title=row.name,
        campaign=row,
        results=results,
        skipped=skipped,
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
