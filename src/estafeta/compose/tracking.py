"""Rewriting HTML for tracking: http(s) links through the click redirect, an open pixel at the end.

Links marked `data-notrack` (and anything not http/https: mailto:, tel:, anchors) are left alone. The
rewrite happens before DKIM signing, so the signature covers the tracked HTML.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from urllib.parse import urlsplit

_ANCHOR = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""(?<![\w-])href\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+)""", re.IGNORECASE)
_NOTRACK = re.compile(r"(?<![\w-])data-notrack(?![\w-])", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_SIGNED = re.compile(rb"^dkim-signature:", re.IGNORECASE | re.MULTILINE)
_HTML_TYPE = re.compile(rb"text/html", re.IGNORECASE)


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


def rewrite_relayed_html(raw: bytes, rewrite: Callable[[str], str]) -> bytes:
    """A relayed message with its HTML parts (not attachments) rewritten for tracking; `raw` unchanged
    when it has no such part, nothing to rewrite, or a DKIM signature of its own (which covers the body).

    The rewritten parts are re-encoded (quoted-printable or base64 as their text needs); every other part
    and, for a multipart message, the header section keep their bytes.
    """
    end = raw.find(b"\r\n\r\n")
    header_section = raw if end < 0 else raw[: end + 2]
    if _SIGNED.search(header_section) or not _HTML_TYPE.search(raw):  # nothing to do: no parsing
        return raw
    message = BytesParser(policy=policy.SMTP).parsebytes(raw)
    changed = False
    for part in message.walk():
        if part.get_content_type() != "text/html" or part.is_attachment():
            continue
        assert isinstance(part, EmailMessage)
        try:
            markup = part.get_content()
        except (LookupError, UnicodeError):  # a charset nobody knows: leave the part alone
            continue
        tracked = rewrite(markup)
        if tracked != markup:
            part.set_content(tracked, subtype="html", charset="utf-8")
            changed = True
    if not changed:
        return raw
    generated = message.as_bytes(policy=policy.SMTP)
    if not message.is_multipart():
        return generated  # the message is the HTML part: its own Content-* headers changed
    return header_section + generated[generated.index(b"\r\n\r\n") + 2 :]
