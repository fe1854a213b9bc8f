"""Signing in and out, joining an account by invitation, switching accounts."""

from __future__ import annotations

import contextlib
import secrets

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from estafeta.audit import request_origin
from estafeta.ids import parse_id
from estafeta.limits import LimitsUnavailable
from estafeta.users import Identity, UserError
from estafeta.web.render import page
from estafeta.web.session import (
    COOKIE,
    LOGIN_COOKIE,
    PageError,
    get_core,
    identity,
    same_origin,
    secure,
    signed_in,
)

router = APIRouter()


def _safe_next(target: str) -> str:
    """Only paths inside the dashboard: a login link cannot send anyone elsewhere."""
    return target if target.startswith("/app/") and not target.startswith("//") else "/app/"


def _login_page(
    request: Request, *, status: int = 200, error: str = "", email: str = "", next_url: str = "/app/"
) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = page(
        request,
        "login.html",
        None,
        status=status,
        title="Sign in",
        login_token=token,
        error=error,
        email=email,
        next=_safe_next(next_url),
    )
    response.set_cookie(
        LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=secure(request), path="/app/"
    )
    return response


async def _check_login_token(request: Request) -> None:
    form = await request.form()
    sent = form.get("csrf_token")
    kept = request.cookies.get(LOGIN_COOKIE, "")
    if (
        not same_origin(request)
        or not isinstance(sent, str)
        or not kept
        or not secrets.compare_digest(sent, kept)
    ):
        raise PageError(
            403, "Refused", "The form had expired or was not sent by this dashboard. Reload and try again."
        )


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str = "/app/") -> Response:
    if await identity(request) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(request, next_url=next)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    await _check_login_token(request)
    form = await request.form()
    email = str(form.get("email") or "")
    password = str(form.get("password") or "")
    next_url = _safe_next(str(form.get("next") or "/app/"))
    limiter = request.app.state.login_failures
    client = request.client.host if request.client else "?"
    try:
        token = await limiter.attempt(client)
    except LimitsUnavailable:
        return _login_page(
            request, status=503, error="Sign-in is unavailable for a moment; try again shortly.", email=email
        )
    if token is None:
        return _login_page(
            request,
            status=429,
            error="Too many failed sign-ins from your address; wait a few minutes.",
            email=email,
        )
    core = get_core(request)
    user = await core.users.authenticate(email, password)
    if user is None:
        return _login_page(
            request, status=401, error="Wrong email or password.", email=email, next_url=next_url
        )
    with contextlib.suppress(LimitsUnavailable):  # else it stays counted until its window passes
        await limiter.succeeded(client, token)
    session = await core.users.start_session(user, origin=request_origin(request))
    if next_url == "/app/" and user.operator:
        next_url = "/app/" if await core.users.accounts_of(user.id) else "/app/admin"
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        COOKIE,
        session.cookie,
        httponly=True,
        samesite="lax",
        secure=secure(request),
        path="/app/",
        max_age=int((session.expires_at - core.clock.now()).total_seconds()),
    )
    response.delete_cookie(LOGIN_COOKIE, path="/app/")
    return response


@router.post("/logout")
async def logout(request: Request, who: Identity = Depends(signed_in)) -> Response:
    await get_core(request).users.end_session(request.cookies.get(COOKIE, ""))
    response = RedirectResponse("/app/login", status_code=303)
    response.delete_cookie(COOKIE, path="/app/")
    return response


@router.post("/account")
async def switch_account(request: Request, who: Identity = Depends(signed_in)) -> Response:
    form = await request.form()
    raw = str(form.get("account_id") or "")
    account_id = parse_id(raw)
    if account_id is None or not await get_core(request).users.switch_account(who, account_id):
        raise PageError(404, "No such account", "You are not a member of that account.")
    return RedirectResponse("/app/", status_code=303)


@router.get("/invite/{token}", response_class=HTMLResponse)
async def invitation(request: Request, token: str) -> Response:
    found = await get_core(request).users.invitation(token)
    if found is None:
        raise PageError(
            404, "This invitation does not work", "The link is not valid, was used already or has expired."
        )
    row, account_name = found
    login_token = secrets.token_urlsafe(32)
    response = page(
        request,
        "invite.html",
        None,
        title=f"Join {account_name}",
        invitation=row,
        account_name=account_name,
        token=token,
        login_token=login_token,
    )
    response.set_cookie(
        LOGIN_COOKIE, login_token, httponly=True, samesite="strict", secure=secure(request), path="/app/"
    )
    return response


@router.post("/invite/{token}", response_class=HTMLResponse)
async def accept_invitation(request: Request, token: str) -> Response:
    await _check_login_token(request)
    form = await request.form()
    core = get_core(request)
    try:
        password, name = str(form.get("password") or ""), str(form.get("name") or "")
        await core.users.accept(token, password, name, origin=request_origin(request))
    except UserError as exc:
        found = await core.users.invitation(token)
        if found is None:
            raise PageError(exc.status, "This invitation does not work", exc.reason) from exc
        login_token = secrets.token_urlsafe(32)
        response = page(
            request,
            "invite.html",
            None,
            status=exc.status,
            title="Join",
            invitation=found[0],
            account_name=found[1],
            token=token,
            login_token=login_token,
            error=exc.reason,
        )
        response.set_cookie(
            LOGIN_COOKIE, login_token, httponly=True, samesite="strict", secure=secure(request), path="/app/"
        )
        return response
    return RedirectResponse("/app/login?next=/app/", status_code=303)
