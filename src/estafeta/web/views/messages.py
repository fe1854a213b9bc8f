"""Messages (search and each one's timeline) and the suppression list."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, Response

from estafeta import suppression
from estafeta.audit import Actor
from estafeta.messages import MessageQuery
from estafeta.users import Identity
from estafeta.web.render import page
from estafeta.web.session import PageError, actor, get_core, reader, sender

router = APIRouter()
PAGE = 50
STATES = ("queued", "deferred", "delivered", "bounced", "suppressed", "held", "cancelled")


def day_field(text: str, field: str) -> datetime | None:
    """A `YYYY-MM-DD` form field as the start of that UTC day."""
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:
        raise PageError(422, "Invalid date", f"{field}: use YYYY-MM-DD") from exc


def _cursor(text: str) -> tuple[datetime, str] | None:
    if not text:
        return None
    try:
        at, _, message_id = base64.urlsafe_b64decode(text.encode()).decode().partition("|")
        return datetime.fromisoformat(at), message_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise PageError(422, "Invalid page", "The page link is broken; start the search again.") from exc


@router.get("/messages", response_class=HTMLResponse)
async def messages(
    request: Request,
    recipient: str = "",
    subject: str = "",
    tag: str = "",
    state: str = "",
    since: str = "",
    until: str = "",
    after: str = "",
    who: Identity = Depends(reader),
) -> Response:
    assert who.account_id is not None
    if state and state not in STATES:
        raise PageError(422, "Unknown state", f"state: one of {', '.join(STATES)}")
    until_day = day_field(until, "until")
    query = MessageQuery(
        who.account_id,
        recipient=recipient.strip(),
        subject=subject.strip(),
        tag=tag.strip(),
        state=state,
        since=day_field(since, "since"),
        until=until_day.replace(hour=23, minute=59, second=59) if until_day else None,
        before=_cursor(after),
    )
    rows = await get_core(request).messages.search(query, PAGE + 1)
    next_url = ""
    if len(rows) > PAGE:
        rows = rows[:PAGE]
        last = rows[-1]
        token = base64.urlsafe_b64encode(f"{last.created_at.isoformat()}|{last.id}".encode()).decode()
        kept = "&".join(f"{k}={v}" for k, v in request.query_params.multi_items() if k != "after" and v)
        next_url = f"/app/messages?{kept}&after={token}" if kept else f"/app/messages?after={token}"
    form = {
        "recipient": recipient,
        "subject": subject,
        "tag": tag,
        "state": state,
        "since": since,
        "until": until,
    }
    return page(
        request,
        "messages.html",
        who,
        title="Messages",
        rows=rows,
        states=STATES,
        next_url=next_url,
        form=form,
    )


@router.get("/messages/{message_id}", response_class=HTMLResponse)
async def message(request: Request, message_id: str, who: Identity = Depends(reader)) -> Response:
    assert who.account_id is not None
    view = await get_core(request).messages.get(who.account_id, message_id)
    if view is None:
        raise PageError(404, "No such message", f"There is no message {message_id} in this account.")
    return page(request, "message.html", who, title=f"Message {view.id}", message=view)


# -- suppression lists (the account's, and the global one for operators) ---------------------------------


async def suppressions_page(
    request: Request, who: Identity, scope: int | None, q: str, *, status: int = 200, **extra: object
) -> Response:
    core = get_core(request)
    rows = await core.suppressions.list(scope, search=q or None, limit=201)
    changes = await core.suppressions.recent_changes(scope)
    return page(
        request,
        "suppressions.html",
        who,
        status=status,
        title="Global suppressions" if scope is None else "Suppressions",
        rows=rows[:200],
        more=len(rows) > 200,
        q=q,
        reasons=suppression.REASONS,
        base="/app/admin/suppressions" if scope is None else "/app/suppressions",
        scope=scope,
        changes=changes,
        actors=await core.users.actor_names(c.actor for c in changes),
        **extra,
    )


async def add_suppression(request: Request, who: Identity, scope: int | None, actor: Actor) -> Response:
    form = await request.form()
    try:
        row, added = await get_core(request).suppressions.add(
            scope,
            str(form.get("address") or ""),
            reason=str(form.get("reason") or "manual"),
            actor=actor,
            note=str(form.get("note") or "")[:500],
        )
    except suppression.SuppressionError as exc:
        return await suppressions_page(request, who, scope, "", status=422, error=exc.reason)
    notice = f"{row.value} added." if added else f"{row.value} was listed already."
    return await suppressions_page(request, who, scope, "", notice=notice)


async def remove_suppression(request: Request, who: Identity, scope: int | None, actor: Actor) -> Response:
    form = await request.form()
    value = str(form.get("value") or "")
    try:
        _, removed = await get_core(request).suppressions.remove(scope, value, actor=actor, note="dashboard")
    except suppression.SuppressionError as exc:
        raise PageError(422, "Not an address or domain", exc.reason) from exc
    if removed is None:
        raise PageError(404, "Not listed", f"{value} is not on this suppression list.")
    q = str(form.get("q") or "")
    return await suppressions_page(request, who, scope, q, notice=f"{removed.value} removed.")


async def export_suppressions(request: Request, scope: int | None, name: str) -> Response:
    return Response(
        await get_core(request).suppressions.export_csv(scope),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"', "Cache-Control": "no-store"},
    )


@router.get("/suppressions", response_class=HTMLResponse)
async def suppressions(request: Request, q: str = "", who: Identity = Depends(reader)) -> Response:
    return await suppressions_page(request, who, who.account_id, q)


@router.post("/suppressions", response_class=HTMLResponse)
async def suppressions_add(request: Request, who: Identity = Depends(sender)) -> Response:
    return await add_suppression(request, who, who.account_id, actor(who, request))


@router.post("/suppressions/remove", response_class=HTMLResponse)
async def suppressions_remove(request: Request, who: Identity = Depends(sender)) -> Response:
    return await remove_suppression(request, who, who.account_id, actor(who, request))


@router.get("/suppressions/export.csv")
async def suppressions_export(request: Request, who: Identity = Depends(reader)) -> Response:
    return await export_suppressions(request, who.account_id, "suppressions")
