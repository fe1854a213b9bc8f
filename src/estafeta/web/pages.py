"""Rendering the public pages: Jinja2 with autoescaping, templates shipped in `web/templates/`."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

_ENV = Environment(
    loader=PackageLoader("estafeta.web", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A rendered page; never sets a cookie."""
    html = _ENV.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers=_HEADERS)
