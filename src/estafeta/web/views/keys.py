"""API keys and SMTP credentials: create (the secret is shown once, on the answer page), revoke."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, Response

from estafeta.auth import SCOPES
from estafeta.users import Identity
from estafeta.web.render import page
from estafeta.web.session import PageError, actor, get_core, reader, sender

router = APIRouter()


async def _keys_page(request: Request, who: Identity, *, status: int = 200, **extra: object) -> Response:
    core = get_core(request)
    assert who.account_id is not None
    keys = await core.api_keys.list(who.account_id)
    credentials = await core.smtp_credentials.list(who.account_id)
    smtp = core.settings.smtp
    return page(
        request,
        "keys.html",
        who,
        status=status,
        title="Keys",
        keys=keys,
        credentials=credentials,
        smtp_host=core.settings.hostname,
        smtp_ports=(smtp.starttls_port, smtp.implicit_tls_port),
        **extra,
    )


@router.get("/keys", response_class=HTMLResponse)
async def keys(request: Request, who: Identity = Depends(reader)) -> Response:
    return await _keys_page(request, who)


@router.post("/keys", response_class=HTMLResponse)
async def create_key(request: Request, who: Identity = Depends(sender)) -> Response:
    assert who.account_id is not None
    form = await request.form()
    name = " ".join(str(form.get("name") or "").split())[:200]
    scope = str(form.get("scope") or "full")
    if scope not in SCOPES:
        raise PageError(422, "Unknown scope", "A key's scope is send, read or full.")
    core = get_core(request)
    new = await core.api_keys.create(who.account_id, name, scope, actor=actor(who, request))  # type: ignore[arg-type]
    return await _keys_page(
        request, who, status=201, new_key=new.token, notice=f"API key {new.prefix} created."
    )


@router.post("/keys/{prefix}/revoke", response_class=HTMLResponse)
async def revoke_key(request: Request, prefix: str, who: Identity = Depends(sender)) -> Response:
    assert who.account_id is not None
    core = get_core(request)
    if not await core.api_keys.revoke(who.account_id, prefix, actor=actor(who, request)):
        raise PageError(404, "No such key", f"There is no active API key {prefix} in this account.")
    return await _keys_page(request, who, notice=f"API key {prefix} revoked: it no longer works.")


@router.post("/smtp-credentials", response_class=HTMLResponse)
async def create_credential(request: Request, who: Identity = Depends(sender)) -> Response:
    assert who.account_id is not None
    core = get_core(request)
    new = await core.smtp_credentials.create(who.account_id, actor=actor(who, request))
    return await _keys_page(
        request, who, status=201, new_credential=new, notice=f"SMTP credential {new.username} created."
    )


@router.post("/smtp-credentials/{username}/revoke", response_class=HTMLResponse)
async def revoke_credential(request: Request, username: str, who: Identity = Depends(sender)) -> Response:
    assert who.account_id is not None
    core = get_core(request)
    if not await core.smtp_credentials.revoke(who.account_id, username, actor=actor(who, request)):
        raise PageError(
            404, "No such credential", f"There is no active SMTP credential {username} in this account."
        )
    return await _keys_page(request, who, notice=f"SMTP credential {username} revoked.")
