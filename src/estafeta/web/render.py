"""Rendering dashboard pages: Jinja2 (autoescaped) templates under `web/templates/app/`, a strict
Content-Security-Policy (scripts and styles only from the dashboard's own static files), never cached.

A request from htmx (`HX-Request`) for a page with a `fragment` block gets only that block, so a search
form can refresh its results without reloading the page; everything works without JavaScript too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Request
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

from estafeta.users import Identity

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
}


def when(value: datetime | None, seconds: bool = False) -> str:
    """A UTC time as `2026-01-31 14:05` (or with seconds), empty for None."""
    if value is None:
        return ""
    return value.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + " UTC"


def percent(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"


def number(value: int | float | None) -> str:
    if value is None:
        return "no limit"
    return f"{value:,}"


_ENV = Environment(
    loader=PackageLoader("estafeta.web", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters.update(when=when, percent=percent, number=number)

NAV = (
    ("/app/", "Overview", "read"),
    ("/app/messages", "Messages", "read"),
    ("/app/domains", "Domains", "read"),
    ("/app/suppressions", "Suppressions", "read"),
    ("/app/webhooks", "Webhooks", "read"),
    ("/app/lists", "Lists", "read"),
    ("/app/campaigns", "Campaigns", "read"),
    ("/app/keys", "Keys", "read"),
    ("/app/usage", "Usage", "read"),
    ("/app/team", "Team", "read"),
)
OPERATOR_NAV = (
    ("/app/admin", "Accounts"),
    ("/app/admin/reviews", "Reviews"),
    ("/app/admin/abuse", "Abuse desk"),
    ("/app/admin/suppressions", "Global suppressions"),
    ("/app/admin/providers", "Providers"),
    ("/app/admin/plans", "Plans"),
    ("/app/admin/audit", "Audit log"),
)


def page(
    request: Request,
    template: str,
    who: Identity | None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """The page (or, to htmx asking for it, its `fragment` block) rendered for `who`."""
    tmpl = _ENV.get_template(f"app/{template}")
    context = {
        "who": who,
        "path": request.url.path,
        "nav": [item for item in NAV if who is not None and who.account_id is not None],
        "operator_nav": OPERATOR_NAV if who is not None and who.user.operator else (),
        **context,
    }
    if request.headers.get("hx-request") and request.headers.get("hx-target") and "fragment" in tmpl.blocks:
        html = "".join(tmpl.blocks["fragment"](tmpl.new_context(context)))
    else:
        html = tmpl.render(context)
    return HTMLResponse(html, status_code=status, headers={**HEADERS, **(headers or {})})
