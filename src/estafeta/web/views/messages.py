"""Messages (search and each one's timeline), sending domains, the suppression list and webhooks."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from estafeta import dns_status, suppression
from estafeta.store import accounts as account_store
from estafeta.store import messages as message_store
from estafeta.store import suppressions as suppression_store
from estafeta.store import webhooks as webhook_store
from estafeta.store.search import MessageQuery, search_messages
from estafeta.users import Identity
from estafeta.web.render import page
from estafeta.web.session import PageError, platform, reader, sender

router = APIRouter()
PAGE = 50
STATES = ("queued", "deferred", "delivered", "bounced", "suppressed", "held", "cancelled")


def _day(text: str, field: str) -> datetime | None:
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
    until_day = _day(until, "until")
    query = MessageQuery(
        who.account_id,
        recipient=recipient.strip(),
        subject=subject.strip(),
        tag=tag.strip(),
        state=state,
        since=_day(since, "since"),
        until=until_day.replace(hour=23, minute=59, second=59) if until_day else None,
        before=_cursor(after),
    )
    rows = await platform(request).db.run(search_messages, query, PAGE + 1)
    next_url = ""
    if len(rows) > PAGE:
        rows = rows[:PAGE]
        last = rows[-1]
        token = base64.urlsafe_b64encode(f"{last.created_at.isoformat()}|{last.id}".encode()).decode()
        params = request.query_params.multi_items()
        kept = "&".join(f"{k}={v}" for k, v in params if k != "after" and v)
        next_url = f"/app/messages?{kept}&after={token}" if kept else f"/app/messages?after={token}"
    return page(
        request,
        "messages.html",
        who,
        title="Messages",
        rows=rows,
        states=STATES,
        next_url=next_url,
        form={
            "recipient": recipient,
            "subject": subject,
            "tag": tag,
            "state": state,
            "since": since,
            "until": until,
        },
    )


@router.get("/messages/{message_id}", response_class=HTMLResponse)
async def message(request: Request, message_id: str, who: Identity = Depends(reader)) -> Response:
    view = await platform(request).db.run(message_store.get_message, who.account_id, message_id)
    if view is None:
        raise PageError(404, "No such message", f"There is no message {message_id} in this account.")
    return page(request, "message.html", who, title=f"Message {view.id}", message=view)


@router.get("/domains", response_class=HTMLResponse)
async def domains(request: Request, who: Identity = Depends(reader)) -> Response:
    plat = platform(request)
    rows = await plat.db.run(account_store.list_domains, who.account_id)
    checked = [(row, await dns_status.check(row, plat.settings)) for row in rows]
    return page(request, "domains.html", who, title="Domains", domains=checked)


# -- suppression list --------------------------------------------------------------------------------


async def _suppressions_page(
    request: Request, who: Identity, scope: int | None, q: str, *, status: int = 200, **extra: object
) -> Response:
    plat = platform(request)
    rows = await plat.db.run(suppression_store.list_entries, scope, search=q or None, limit=201)
    template = "suppressions.html"
    return page(
        request,
        template,
        who,
        status=status,
        title="Global suppressions" if scope is None else "Suppressions",
        rows=rows[:200],
        more=len(rows) > 200,
        q=q,
        reasons=suppression.REASONS,
        base="/app/admin/suppressions" if scope is None else "/app/suppressions",
        scope=scope,
        **extra,
    )


@router.get("/suppressions", response_class=HTMLResponse)
async def suppressions(request: Request, q: str = "", who: Identity = Depends(reader)) -> Response:
    return await _suppressions_page(request, who, who.account_id, q)


async def add_suppression(request: Request, who: Identity, scope: int | None, actor: str) -> Response:
    form = await request.form()
    try:
        value = suppression.parse_value(str(form.get("address") or ""))
        reason = suppression.check_reason(str(form.get("reason") or "manual"))
    except suppression.SuppressionError as exc:
        return await _suppressions_page(request, who, scope, "", status=422, error=exc.reason)
    plat = platform(request)
    entry = suppression_store.NewSuppression(scope, value.kind, value.value, reason)
    added = await plat.db.run(
        suppression_store.add,
        entry,
        actor=actor,
        now=plat.clock.now(),
        note=str(form.get("note") or "")[:500],
    )
    notice = f"{value.value} added." if added else f"{value.value} was listed already."
    return await _suppressions_page(request, who, scope, "", notice=notice)


async def remove_suppression(request: Request, who: Identity, scope: int | None, actor: str) -> Response:
    form = await request.form()
    value = str(form.get("value") or "")
    plat = platform(request)
    removed = await plat.db.run(
        suppression_store.remove, scope, value, actor=actor, now=plat.clock.now(), note="dashboard"
    )
    if removed is None:
        raise PageError(404, "Not listed", f"{value} is not on this suppression list.")
    return await _suppressions_page(
        request, who, scope, str(form.get("q") or ""), notice=f"{removed.value} removed."
    )


async def export_suppressions(request: Request, scope: int | None, name: str) -> Response:
    rows = await platform(request).db.run(suppression_store.list_entries, scope)
    return Response(
        suppression.to_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"', "Cache-Control": "no-store"},
    )


@router.post("/suppressions", response_class=HTMLResponse)
async def suppressions_add(request: Request, who: Identity = Depends(sender)) -> Response:
    return await add_suppression(request, who, who.account_id, f"user:{who.user.id}")


@router.post("/suppressions/remove", response_class=HTMLResponse)
async def suppressions_remove(request: Request, who: Identity = Depends(sender)) -> Response:
    return await remove_suppression(request, who, who.account_id, f"user:{who.user.id}")


@router.get("/suppressions/export.csv")
async def suppressions_export(request: Request, who: Identity = Depends(reader)) -> Response:
    return await export_suppressions(request, who.account_id, "suppressions")


# -- webhooks ------------------------------------------------------------------------------------------


@router.get("/webhooks", response_class=HTMLResponse)
async def webhooks(request: Request, who: Identity = Depends(reader)) -> Response:
    rows = await platform(request).db.run(webhook_store.list_endpoints, who.account_id)
    return page(request, "webhooks.html", who, title="Webhooks", endpoints=rows)


async def _endpoint(request: Request, who: Identity, endpoint_id: int) -> webhook_store.EndpointRow:
    row = await platform(request).db.run(webhook_store.get_endpoint, who.account_id, endpoint_id)
    if row is None:
        raise PageError(
            404, "No such webhook", f"There is no webhook endpoint {endpoint_id} in this account."
        )
    return row


@router.get("/webhooks/{endpoint_id}", response_class=HTMLResponse)
async def webhook(
    request: Request, endpoint_id: int, state: str = "", notice: str = "", who: Identity = Depends(reader)
) -> Response:
    endpoint = await _endpoint(request, who, endpoint_id)
    rows = await platform(request).db.run(
        webhook_store.list_deliveries, who.account_id, endpoint_id, state=state or None, limit=100
    )
    return page(
        request,
        "webhook.html",
        who,
        title=f"Webhook {endpoint.url}",
        endpoint=endpoint,
        deliveries=rows,
        state=state,
        notice=notice,
    )


@router.post("/webhooks/{endpoint_id}/deliveries/{delivery_id}/replay")
async def webhook_replay(
    request: Request, endpoint_id: int, delivery_id: int, who: Identity = Depends(sender)
) -> Response:
    await _endpoint(request, who, endpoint_id)
    plat = platform(request)
    row = await plat.db.run(webhook_store.replay, who.account_id, endpoint_id, delivery_id, plat.clock.now())
    if row is None:
        found = await plat.db.run(webhook_store.get_delivery, who.account_id, endpoint_id, delivery_id)
        if found is None:
            raise PageError(404, "No such delivery", f"No delivery {delivery_id} for this endpoint.")
        raise PageError(
            409, "Being sent", "The delivery is being sent right now; replay it once that attempt is over."
        )
    plat.webhooks.wakeup.set()
    return RedirectResponse(
        f"/app/webhooks/{endpoint_id}?notice=Delivery+{delivery_id}+queued+again", status_code=303
    )
