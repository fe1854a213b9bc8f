"""The dashboard at `/app`: sender and operator pages, mounted on the API's application.

`install(app)` adds the pages, the vendored static files (`/app/static`, served from the package) and
the handlers that turn refusals into pages: not signed in → the login page; 403/404 → a page (or a
fragment for htmx) with the status.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from estafeta.smtp.limits import LoginFailureLimiter
from estafeta.web.render import page
from estafeta.web.session import LoginRequired, PageError, identity
from estafeta.web.views import (
    admin,
    audit,
    auth,
    campaigns,
    domains,
    keys,
    lists,
    messages,
    overview,
    team,
    webhooks,
)

MAX_LOGIN_FAILURES = 10
LOGIN_FAILURE_WINDOW = 300.0


def install(app: FastAPI) -> None:
    app.state.login_failures = LoginFailureLimiter(
        app.state.core.limits, "dashboard-login:ip", MAX_LOGIN_FAILURES, LOGIN_FAILURE_WINDOW
    )
    app.mount("/app/static", StaticFiles(packages=[("estafeta.web", "static")]), name="dashboard-static")
    for module in (auth, overview, messages, domains, lists, campaigns, webhooks, keys, team, admin, audit):
        app.include_router(module.router, prefix="/app", include_in_schema=False)

    @app.get("/app", include_in_schema=False)
    async def _root() -> Response:
        return RedirectResponse("/app/", status_code=308)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": "/app/login"})
        return RedirectResponse(f"/app/login?next={quote(exc.next_url)}", status_code=303)

    @app.exception_handler(PageError)
    async def _refused(request: Request, exc: PageError) -> HTMLResponse:
        who = await identity(request)
        return page(request, "error.html", who, status=exc.status, title=exc.title, text=exc.text)
