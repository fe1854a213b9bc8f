"""Webhooks: endpoints (create, edit, delete, send a test), each one's delivery log and replays.

Every change goes through the core's one endpoint implementation (`core.webhooks`), so a URL or an event
type is checked exactly as through `/v1/webhooks` and `estafeta webhooks`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, RedirectResponse, Response

from estafeta.api.events import EVENT_TYPES
from estafeta.api.params import Id
from estafeta.users import Identity
from estafeta.web.render import page
from estafeta.web.session import PageError, actor, get_core, reader, sender
from estafeta.webhook_endpoints import STATES, EndpointRow, WebhookError

router = APIRouter()
TYPES = sorted(EVENT_TYPES)


def _fields(form: FormData) -> dict[str, Any]:
    """An endpoint's fields from its form: no event type ticked means every type."""
    return {
        "url": str(form.get("url") or "").strip(),
        "event_types": [str(t) for t in form.getlist("event_types")],
        "description": str(form.get("description") or ""),
        "enabled": form.get("enabled") == "yes",
    }


def _reason(exc: WebhookError) -> str:
    return f"{exc.field}: {exc.reason}" if exc.field else exc.reason


async def _webhooks_page(
    request: Request,
    who: Identity,
    *,
    status: int = 200,
    form: dict[str, Any] | None = None,
    error: str = "",
    notice: str = "",
) -> Response:
    assert who.account_id is not None
    rows = await get_core(request).webhooks.list(who.account_id)
    return page(
        request,
        "webhooks.html",
        who,
        status=status,
        title="Webhooks",
        endpoints=rows,
        types=TYPES,
        form=form or {"enabled": True, "event_types": []},
        error=error,
        notice=notice,
    )


@router.get("/webhooks", response_class=HTMLResponse)
async def webhooks(request: Request, notice: str = "", who: Identity = Depends(reader)) -> Response:
    return await _webhooks_page(request, who, notice=notice)


@router.post("/webhooks", response_class=HTMLResponse)
async def create(request: Request, who: Identity = Depends(sender)) -> Response:
    assert who.account_id is not None
    fields = _fields(await request.form())
    try:
        row = await get_core(request).webhooks.create(who.account_id, **fields, actor=actor(who, request))
    except WebhookError as exc:
        return await _webhooks_page(request, who, status=exc.status, form=fields, error=_reason(exc))
    return RedirectResponse(f"/app/webhooks/{row.id}?notice=Endpoint+created", status_code=303)


async def _endpoint(request: Request, who: Identity, endpoint_id: int) -> EndpointRow:
    assert who.account_id is not None
    try:
        return await get_core(request).webhooks.get(who.account_id, endpoint_id)
    except WebhookError as exc:
        raise PageError(404, "No such webhook", exc.reason) from exc


async def _endpoint_page(
    request: Request,
    who: Identity,
    endpoint: EndpointRow,
    *,
    state: str = "",
    status: int = 200,
    form: dict[str, Any] | None = None,
    **extra: object,
) -> Response:
    if state not in ("", *STATES):
        raise PageError(422, "Unknown state", f"state: {', '.join(STATES)}")
    rows = await get_core(request).webhooks.deliveries(
        who.account_id, endpoint.id, state=state or None, limit=100
    )
    return page(
        request,
        "webhook.html",
        who,
        status=status,
        title=f"Webhook {endpoint.url}",
        endpoint=endpoint,
        deliveries=rows,
        state=state,
        types=TYPES,
        form=form or endpoint.__dict__,
        **extra,
    )


@router.get("/webhooks/{endpoint_id}", response_class=HTMLResponse)
async def webhook(
    request: Request, endpoint_id: Id, state: str = "", notice: str = "", who: Identity = Depends(reader)
) -> Response:
    endpoint = await _endpoint(request, who, endpoint_id)
    return await _endpoint_page(request, who, endpoint, state=state, notice=notice)


@router.post("/webhooks/{endpoint_id}", response_class=HTMLResponse)
async def edit(request: Request, endpoint_id: Id, who: Identity = Depends(sender)) -> Response:
    endpoint = await _endpoint(request, who, endpoint_id)
    form = await request.form()
    fields = _fields(form)
    rotate = form.get("rotate_secret") == "yes"
    try:
        endpoint = await get_core(request).webhooks.update(
            who.account_id, endpoint_id, fields, rotate_secret=rotate, actor=actor(who, request)
        )
    except WebhookError as exc:
        return await _endpoint_page(
            request, who, endpoint, status=exc.status, form=fields, error=_reason(exc)
        )
    notice = "Endpoint saved" + ("; it has a new signing secret" if rotate else "") + "."
    return await _endpoint_page(request, who, endpoint, notice=notice)


@router.post("/webhooks/{endpoint_id}/delete")
async def delete(request: Request, endpoint_id: Id, who: Identity = Depends(sender)) -> Response:
    endpoint = await _endpoint(request, who, endpoint_id)
    await get_core(request).webhooks.remove(who.account_id, endpoint.id, actor=actor(who, request))
    return RedirectResponse("/app/webhooks?notice=Endpoint+deleted", status_code=303)


@router.post("/webhooks/{endpoint_id}/test")
async def send_test(request: Request, endpoint_id: Id, who: Identity = Depends(sender)) -> Response:
    await _endpoint(request, who, endpoint_id)
    delivery = await get_core(request).webhooks.send_test(who.account_id, endpoint_id)
    return RedirectResponse(
        f"/app/webhooks/{endpoint_id}?notice=Test+delivery+{delivery.id}+queued", status_code=303
    )


@router.post("/webhooks/{endpoint_id}/deliveries/{delivery_id}/replay")
async def replay(
    request: Request, endpoint_id: Id, delivery_id: Id, who: Identity = Depends(sender)
) -> Response:
    await _endpoint(request, who, endpoint_id)
    try:
        await get_core(request).webhooks.replay(who.account_id, endpoint_id, delivery_id)
    except WebhookError as exc:
        title = "No such delivery" if exc.status == 404 else "Being sent"
        raise PageError(exc.status, title, exc.reason) from exc
    return RedirectResponse(
        f"/app/webhooks/{endpoint_id}?notice=Delivery+{delivery_id}+queued+again", status_code=303
    )
