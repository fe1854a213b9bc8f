"""Who is asking: the dashboard's session cookie, CSRF checks and role guards (FastAPI dependencies).

Every page depends on a guard. A guard finds the signed-in user (or sends the browser to the login page),
refuses any state-changing request whose CSRF token (form field `csrf_token` or header `X-CSRF-Token`,
which htmx sends) does not match the session's, or whose Origin is another site, and then checks the
capability the page needs: `read`, `send` or `manage` in the account being looked at, or being an
operator. Refusals are pages with a status: 403 for what the role does not allow, 404 for what is not
in the account (so that other accounts' ids reveal nothing).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from fastapi import Request

from estafeta.audit import Actor, request_origin
from estafeta.users import Identity

if TYPE_CHECKING:
    from estafeta.core import Core

COOKIE = "estafeta_session"
LOGIN_COOKIE = "estafeta_login"  # the login form's CSRF token, before there is a session
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class PageError(Exception):
    """A refusal shown as a page (or, to htmx, as a fragment) with this status."""

    def __init__(self, status: int, title: str, text: str = "") -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.text = text


class LoginRequired(Exception):
    """Not signed in: a page request is sent to the login page, then back to `next_url`."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def actor(who: Identity, request: Request) -> Actor:
    """How the audit trails name a dashboard user (`user:<id>/<email>`), and where they are."""
    return Actor.user(who.user.id, who.user.email, request_origin(request))


def get_core(request: Request) -> Core:
    return request.app.state.core  # type: ignore[no-any-return]


def secure(request: Request) -> bool:
    """Cookies get the Secure flag when the dashboard is reached over https (directly or by its public
    URL)."""
    public = get_core(request).settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site (Origin, else Referer)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return True  # not a browser, or one that sends neither: the CSRF token still has to match
    if source == "null":
        return False
    return urlsplit(source).netloc == request.headers.get("host", request.url.netloc)


async def csrf_token(request: Request) -> str:
    header = request.headers.get("x-csrf-token")
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get("csrf_token")
        return value if isinstance(value, str) else ""
    return ""


async def check_csrf(request: Request, expected: str) -> None:
    if not same_origin(request):
        raise PageError(403, "Refused", "This request came from another site.")
    if not secrets.compare_digest((await csrf_token(request)).encode(), expected.encode()):
        raise PageError(
            403, "Refused", "The form had expired or was not sent by this dashboard. Reload and try again."
        )


async def identity(request: Request) -> Identity | None:
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    return await get_core(request).users.identify(cookie)


def guard(
    capability: str | None = None, *, operator: bool = False
) -> Callable[[Request], Awaitable[Identity]]:
    """A dependency giving the signed-in user allowed to do `capability` in their current account (or,
    with `operator`, a platform operator)."""

    async def dependency(request: Request) -> Identity:
        who = await identity(request)
        if who is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(target if request.method in SAFE_METHODS else "/app/")
        if request.method not in SAFE_METHODS:
            await check_csrf(request, who.csrf_token)
        if operator and not who.user.operator:
            raise PageError(403, "Operators only", "This page is for the platform's operators.")
        if capability is not None:
            if who.account_id is None:
                raise PageError(404, "No account", "You are not a member of any account yet.")
            if not who.may(capability):
                raise PageError(
                    403,
                    "Not allowed",
                    f"Your role in {who.account_name} ({who.role}) may not do this; ask an owner of the "
                    "account.",
                )
        return who

    return dependency


signed_in = guard()
reader = guard("read")
sender = guard("send")
owner = guard("manage")
operator = guard(operator=True)
