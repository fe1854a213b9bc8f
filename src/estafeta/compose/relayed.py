"""Tracking a message that arrived already composed (SMTP relay), changing nothing but its HTML.

Only the text/html parts that are not attachments are rewritten, and never inside an attached message
(`message/rfc822`: a forwarded mail stays as it was). A rewritten part keeps its charset when the new text
fits it, is re-encoded quoted-printable (7-bit, whatever the receiving server supports) and keeps its other
Content-* fields (Content-ID of a multipart/related root, Content-Location, …). Every other byte stays:
the header section (only Content-Type and Content-Transfer-Encoding are replaced when the message itself is
the HTML part), the other parts, the MIME structure. A part whose text cannot be decoded exactly as
declared is left alone rather than guessed at, and so is a message signed by its sender: a DKIM signature
covers the body.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

# Headers are written back as they came (no refolding), so nothing outside the HTML parts changes.
_POLICY = policy.SMTP.clone(refold_source="none")
_SIGNED = re.compile(rb"^dkim-signature:", re.IGNORECASE | re.MULTILINE)
_HTML_TYPE = re.compile(rb"text/html", re.IGNORECASE)
_KEPT_FIELDS = (
    "content-id",
    "content-location",
    "content-disposition",
    "content-language",
    "content-description",
)
_REPLACED_FIELDS = (b"content-type", b"content-transfer-encoding")


def rewrite_relayed_html(raw: bytes, rewrite: Callable[[str], str]) -> bytes:
    """`raw` with its HTML parts rewritten by `rewrite`; `raw` itself when there is nothing to change."""
    end = raw.find(b"\r\n\r\n")
    if end < 0 or _SIGNED.search(raw[: end + 2]) or not _HTML_TYPE.search(raw):  # no need to parse
        return raw
    header_section = raw[: end + 2]
    message = BytesParser(policy=_POLICY).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    changed = False
    for part in _html_parts(message):
        markup = _text(part)
        if markup is None:
            continue
        tracked = rewrite(markup)
        if tracked == markup:
            continue
        kept = [(name, value) for name, value in part.raw_items() if name.lower() in _KEPT_FIELDS]
        part.set_content(tracked, subtype="html", charset=_charset(part, tracked), cte="quoted-printable")
        for name, value in kept:
            part[name] = value
        changed = True
    if not changed:
        return raw
    generated = message.as_bytes(policy=_POLICY)
    body = generated[generated.index(b"\r\n\r\n") + 4 :]
    if message.is_multipart():
        return header_section + b"\r\n" + body
    replaced = [
        f"Content-Type: {message['Content-Type']}\r\n".encode("ascii"),
        f"Content-Transfer-Encoding: {message['Content-Transfer-Encoding']}\r\n".encode("ascii"),
    ]
    return _without_fields(header_section, _REPLACED_FIELDS) + b"".join(replaced) + b"\r\n" + body


def _html_parts(part: EmailMessage) -> Iterator[EmailMessage]:
    if part.get_content_maintype() == "multipart":
        for sub in part.iter_parts():
            assert isinstance(sub, EmailMessage)
            yield from _html_parts(sub)
    elif part.get_content_type() == "text/html" and not part.is_attachment():
        yield part


def _text(part: EmailMessage) -> str | None:
    """The part's text decoded exactly as declared (US-ASCII when no charset is given), or None."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    try:
        return payload.decode(part.get_content_charset() or "us-ascii")
    except (LookupError, UnicodeDecodeError):
        return None


def _charset(part: EmailMessage, text: str) -> str:
    """The part's own charset when the rewritten text fits it (links and the pixel are ASCII), else UTF-8."""
    declared = part.get_content_charset() or "us-ascii"
    try:
        text.encode(declared)
    except (LookupError, UnicodeEncodeError):
        return "utf-8"
    return declared


def _without_fields(header_section: bytes, names: tuple[bytes, ...]) -> bytes:
    """The header section without the named fields (their continuation lines included)."""
    kept: list[bytes] = []
    dropping = False
    for line in header_section.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.split(b":", 1)[0].strip().lower() in names
        if not dropping:
            kept.append(line)
    return b"".join(line + b"\r\n" for line in kept)
