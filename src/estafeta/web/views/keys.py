"""API keys and SMTP credentials: create (the secret is shown once, on the answer page), revoke."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, Response

from estafeta.smtp.credentials import create_smtp_credential
from estafeta.store import accounts as account_store
from estafeta.store import smtp_credentials as credential_store
from estafeta.users import Identity
from estafeta.web.render import page
from estafeta.web.session import PageError, platform, reader, sender

router = APIRouter()


async def _keys_page(request: Request, who: Identity, *, status: int = 200, **extra: object) -> Response:
    plat = platform(request)
    keys = await plat.db.run(account_store.list_api_keys, who.account_id)
    credentials = await plat.db.run(credential_store.list_credentials, who.account_id)
    smtp = plat.settings.smtp
    return page(
        request,
        "keys.html",
        who,
        status=status,
        title="Keys",
        keys=keys,
        credentials=credentials,
        smtp_host=plat.settings.hostname,
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
    plat = platform(request)
    new = await plat.api_keys.create(who.account_id, name, plat.clock.now())
    return await _keys_page(
        request, who, status=201, new_key=new.token, notice=f"API key {new.prefix} created."
    )


@router.post("/keys/{prefix}/revoke", response_class=HTMLResponse)
async def revoke_key(request: Request, prefix: str, who: Identity = Depends(sender)) -> Response:
    assert who.account_id is not None
    plat = platform(request)
    if not await plat.api_keys.revoke(who.account_id, prefix, plat.clock.now()):
        raise PageError(404, "No such key", f"There is no active API key {prefix} in this account.")
    return await _keys_page(request, who, notice=f"API key {prefix} revoked: it no longer works.")


@router.post("/smtp-credentials", response_class=HTMLResponse)
async def create_credential(request: Request, who: Identity = Depends(sender)) -> Response:
    assert who.account_id is not None
    plat = platform(request)
    new = await create_smtp_credential(plat.db, who.account_id, plat.clock.now())
    return await _keys_page(
        request, who, status=201, new_credential=new, notice=f"SMTP credential {new.username} created."
    )


@router.post("/smtp-credentials/{username}/revoke", response_class=HTMLResponse)
async def revoke_credential(request: Request, username: str, who: Identity = Depends(sender)) -> Response:
    assert who.account_id is not None
    plat = platform(request)
    if not await plat.smtp_credentials.revoke(who.account_id, username, plat.clock.now()):
        raise PageError(
            404, "No such credential", f"There is no active SMTP credential {username} in this account."
        )
    return await _keys_page(request, who, notice=f"SMTP credential {username} revoked.")
