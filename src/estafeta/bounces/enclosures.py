"""Make every report read like a plain RFC 3464/6522 one before it is classified.

Two kinds of real-world report otherwise hide what they carry from a reader that knows only the classic
media types:

* internationalized notifications (RFC 6533) — `message/global-delivery-status`,
  `message/global-disposition-notification`, `message/global-headers` and `message/global` — which
  SMTPUTF8-capable servers (Postfix among them) send when the original or the recipient is not ASCII;
* enclosed messages sent base64 or quoted-printable encoded — allowed for `message/global`, forbidden but
  common for `message/rfc822` in forwards from webmail and some abuse desks — whose headers a MIME parser
  then sees as one opaque body.

Each such part is rewritten in the parsed tree as its classic counterpart with its content decoded, so one
reader handles them all.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from email import message_from_bytes, policy
from email.message import Message
from email.parser import HeaderParser

_CLASSIC = {
    "message/global": "message/rfc822",
    "message/global-headers": "text/rfc822-headers",
    "message/global-delivery-status": "message/delivery-status",
    "message/global-disposition-notification": "message/disposition-notification",
}
_FIELD_BLOCKS = ("message/delivery-status", "message/disposition-notification")
_ENCODED = ("base64", "quoted-printable")
_BLANK_LINE = re.compile(r"\r?\n[ \t]*\r?\n")


def read_like_classic(msg: Message) -> Message:
    """Rewrite `msg` in place (see the module's docstring) and return it."""
    for part in list(msg.walk()):
        kind = part.get_content_type()
        classic = _CLASSIC.get(kind, kind)
        encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        if classic == kind and (kind != "message/rfc822" or encoding not in _ENCODED):
            continue
        content = _content(part, encoding)
        if classic in _FIELD_BLOCKS:
            part.set_payload(_field_blocks(content))
        elif classic == "message/rfc822":
            part.set_payload([message_from_bytes(content, policy=policy.compat32)])
        else:  # text/rfc822-headers: read as text, as the classic type is
            part.set_payload(content.decode("utf-8", "replace"))
        if "Content-Transfer-Encoding" in part:
            part.replace_header("Content-Transfer-Encoding", "8bit")
        if classic != kind:
            part.set_type(classic)
    return msg


def _content(part: Message, encoding: str) -> bytes:
    """The part's content as it was sent, decoded from its transfer encoding.

    A MIME parser reads any `message/*` part as an enclosed message, so the original bytes are put back
    together from what it made of them (headers, if it found any, and the body)."""
    raw = _as_bytes(part)
    if encoding == "base64":
        try:
            return base64.b64decode(raw, validate=False)
        except (binascii.Error, ValueError):
            return raw
    if encoding == "quoted-printable":
        return quopri.decodestring(raw)
    return raw


def _as_bytes(part: Message) -> bytes:
    """A part's payload as bytes again: the raw text, or the enclosed messages the parser made of it.

    The raw payload is read because `get_payload()` replaces the bytes its charset cannot decode."""
    payload = part._payload  # type: ignore[attr-defined]
    if not isinstance(payload, list):
        return str(payload).encode("utf-8", "surrogateescape")
    out = b""
    for enclosed in payload:
        headers = "".join(f"{name}: {value}\n" for name, value in enclosed.raw_items())
        body = _as_bytes(enclosed)
        out += headers.encode("utf-8", "surrogateescape") + b"\n" + body if headers else body
    return out


def _field_blocks(content: bytes) -> list[Message]:
    """The header-like field blocks of a delivery-status or disposition-notification body (UTF-8 allowed)."""
    text = content.decode("utf-8", "replace").strip()
    parser = HeaderParser()
    return [parser.parsestr(block) for block in _BLANK_LINE.split(text) if block.strip()]
