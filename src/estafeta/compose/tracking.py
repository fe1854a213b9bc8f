"""Rewriting HTML for tracking: http(s) links through the click redirect, an open pixel at the end.

Links marked `data-notrack` (and anything not http/https: mailto:, tel:, anchors) are left alone. The
rewrite happens before DKIM signing, so the signature covers the tracked HTML.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from urllib.parse import urlsplit

_ANCHOR = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""(?<![\w-])href\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+)""", re.IGNORECASE)
_NOTRACK = re.compile(r"(?<![\w-])data-notrack(?![\w-])", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def trackable(url: str) -> bool:
    """Only absolute http(s) URLs with a host are sent through the redirect."""
    parts = urlsplit(url)
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def rewrite_links(markup: str, click_url: Callable[[str, int], str]) -> str:
    """Replace each trackable `href` by `click_url(original_url, link_index)`; indexes count from 0."""
    index = 0

    def anchor(match: re.Match[str]) -> str:
        nonlocal index
        tag = match.group(0)
        if _NOTRACK.search(tag):
            return tag
        href = _HREF.search(tag)
        if href is None:
            return tag
        url = html.unescape(href.group(1).strip("\"'")).strip()
        if not trackable(url):
            return tag
        tracked = click_url(url, index)
        index += 1
        return f'{tag[: href.start()]}href="{html.escape(tracked)}"{tag[href.end() :]}'

    return _ANCHOR.sub(anchor, markup)


def add_pixel(markup: str, pixel_url: str) -> str:
    """Put a 1x1 image just before `</body>` (or at the end when there is none)."""
    pixel = (
        f'<img src="{html.escape(pixel_url)}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0" />'
    )
    ends = list(_BODY_END.finditer(markup))
    if not ends:
        return markup + pixel
    at = ends[-1].start()
    return markup[:at] + pixel + markup[at:]
