"""Build an RFC 5322 / MIME message from what a caller asked for, written directly as bytes.

The stdlib's `email` objects parse every header they are given and fold it again on output, which cost
several times more than the rest of accepting a message; the structure built here is fixed and simple, so it
is written as it goes on the wire: CRLF lines, headers folded at whitespace within 78 columns, non-ASCII
header text as RFC 2047 encoded words (raw UTF-8 in an SMTPUTF8 message, RFC 6532), bodies 7bit when they
are ASCII with short lines and otherwise quoted-printable or base64 (whichever is shorter), so they pass
servers without 8BITMIME; attachments base64 with RFC 2231 file names; random multipart boundaries.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal
from urllib.parse import quote

from estafeta.compose.addresses import Address
from estafeta.compose.headers import (
    FOLD_COLUMN,
    MAX_LINE_OCTETS,
    ComposeError,
    check_custom_headers,
    check_feedback_id,
    fold_words,
    format_date,
    line_break_or_control,
    message_id_header,
)

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 2045 token
_CONTENT_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})")
_CONTENT_ID = re.compile(r"[!-;=?-~]+")  # visible ASCII without angle brackets
_LINE_END = re.compile(r"\r\n|\r|\n")
_QUOTED_SPECIALS = re.compile(r'[\\"]')
_ATOM_SPECIALS = re.compile(r'[()<>@,;:\\".\[\]]')  # a display name with these is quoted
_LONGEST_WORD = 900  # octets: a whitespace-free run longer than this is written as encoded words


@dataclass
class Attachment:
    """A file to attach; with a `content_id` it is shown inline (referenced as `cid:` from the HTML)."""

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"
    content_id: str | None = None


@dataclass(frozen=True)
class ListUnsubscribe:
    """Where a recipient unsubscribes: a one-click https URL (RFC 8058) and/or a mailto address (RFC 2369)."""

    url: str | None = None
    mailto: str | None = None

    def header_value(self) -> str:
        uris = ([f"<{self.url}>"] if self.url else []) + ([f"<mailto:{self.mailto}>"] if self.mailto else [])
        return ", ".join(uris)


@dataclass
class Draft:
    """What a caller asks to send, with addresses already normalised."""

    from_: Address
    to: list[Address]
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    reply_to: list[Address] = field(default_factory=list)
    subject: str = ""
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    stream: Literal["transactional", "broadcast"] = "transactional"
    tags: list[str] = field(default_factory=list)
    unsubscribe: ListUnsubscribe | None = None


@dataclass(frozen=True)
class ComposedMessage:
    raw: bytes  # CRLF line endings, unsigned
    message_id_header: str  # "<...@sending-domain>"
    recipients: list[Address]  # to + cc + bcc, de-duplicated by email
    smtputf8: bool


def _recipient_key(address: Address) -> str:
    local, _, domain = address.email.rpartition("@")
    return f"{local}@{domain.lower()}"


def _unique_recipients(addresses: list[Address]) -> list[Address]:
    unique: dict[str, Address] = {}
    for address in addresses:
        unique.setdefault(_recipient_key(address), address)
    return list(unique.values())


def _check_attachment(index: int, attachment: Attachment) -> tuple[str, str, str | None]:
    """Validate one attachment; return its main type, subtype and `<content-id>`."""
    where = f"attachments[{index}]"
    match = _CONTENT_TYPE.fullmatch(attachment.content_type.strip())
    if not match:
        raise ComposeError(f"{where}.content_type", "must look like 'type/subtype'")
    maintype, subtype = match.group(1).lower(), match.group(2).lower()
    if maintype in ("multipart", "message"):
        raise ComposeError(f"{where}.content_type", f"{maintype}/* attachments are not supported")
    if not attachment.filename.strip():
        raise ComposeError(f"{where}.filename", "must not be empty")
    if bad := line_break_or_control(attachment.filename, allow_tab=False):
        raise ComposeError(f"{where}.filename", f"contains the control character {bad}")
    content_id = None
    if attachment.content_id is not None:
        bare_id = attachment.content_id.strip().removeprefix("<").removesuffix(">")
        if not _CONTENT_ID.fullmatch(bare_id):
            raise ComposeError(
                f"{where}.content_id", "must be printable ASCII without spaces or angle brackets"
            )
        content_id = f"<{bare_id}>"
    return maintype, subtype, content_id


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _with_unsubscribe(headers: list[tuple[str, str]], unsubscribe: ListUnsubscribe) -> list[tuple[str, str]]:
    """List-Unsubscribe (and List-Unsubscribe-Post when there is a one-click URL) from the platform."""
    if any(name.lower() in ("list-unsubscribe", "list-unsubscribe-post") for name, _ in headers):
        raise ComposeError(
            "headers.List-Unsubscribe", "is set by the platform for list mail and cannot be supplied"
        )
    value = unsubscribe.header_value()
    if not value or not value.isascii() or line_break_or_control(value):
        raise ComposeError(
            "unsubscribe", "needs an ASCII https URL or mailto address without control characters"
        )
    added = [("List-Unsubscribe", value)]
    if unsubscribe.url:
        added.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    return [*headers, *added]


# --- header fields ------------------------------------------------------------------------------------------


def _encoded_words(text: str, first_column: int = 0) -> list[str]:
    """`text` as RFC 2047 encoded words of whole characters, each on a line of its own within 78 columns
    (the first starting at `first_column`); whitespace between encoded words is not part of the decoded
    text, so every character (spaces included) travels inside a word."""
    words: list[str] = []
    chunk = bytearray()
    room = _word_bytes(FOLD_COLUMN - first_column)
    for char in text:
        encoded = char.encode("utf-8")
        if chunk and len(chunk) + len(encoded) > room:
            words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode('ascii')}?=")
            chunk.clear()
            room = _word_bytes(FOLD_COLUMN - 1)  # after the folding space
        chunk += encoded
    if chunk or not words:
        words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode('ascii')}?=")
    return words


def _word_bytes(columns: int) -> int:
    """How many bytes an encoded word fitting in `columns` holds: `=?utf-8?b?` and `?=` take 12, base64
    carries 3 bytes in 4 characters (at least one character of up to 4 bytes, whatever the room)."""
    return max((columns - 12) // 4 * 3, 4)


def _field(name: str, value: str) -> str:
    """A header field folded at the whitespace of `value` (CRLF-terminated)."""
    return f"{name}: {fold_words(name, value).replace(chr(10), chr(13) + chr(10))}\r\n"


def _encoded_field(name: str, text: str) -> str:
    """A header field of encoded words, one folded line per word past the first that fits."""
    return _field(name, " ".join(_encoded_words(text, len(name) + 2)))


def _text_field(name: str, text: str, utf8: bool) -> str:
    """A caller's header: as given (folded) when the message may carry it (ASCII, or UTF-8 in an SMTPUTF8
    message), else as encoded words."""
    return _field(name, text) if utf8 or text.isascii() else _encoded_field(name, text)


def _subject_field(text: str, utf8: bool) -> str:
    """The Subject, as encoded words also when it reads like one or has a word too long for a line, so that
    it always reads back as written."""
    if not text.strip():
        return "Subject: \r\n"
    plain = (utf8 or text.isascii()) and "=?" not in text
    if plain and not any(len(word.encode()) > _LONGEST_WORD for word in text.split()):
        return _field("Subject", text)
    return _encoded_field("Subject", text)


def _mailbox(address: Address, utf8: bool) -> str:
    """One mailbox as a header shows it: `Name <local@domain>` with the name quoted or encoded as needed."""
    name = address.display_name
    if not name:
        return address.email
    if name.isascii() or utf8:
        if _ATOM_SPECIALS.search(name) or name != " ".join(name.split()):
            name = '"' + _QUOTED_SPECIALS.sub(lambda m: "\\" + m.group(), name) + '"'
        return f"{name} <{address.email}>"
    return f"{' '.join(_encoded_words(name))} <{address.email}>"


def _address_field(name: str, addresses: list[Address], utf8: bool) -> str:
    return _field(name, ", ".join(_mailbox(a, utf8) for a in addresses))


def _param(name: str, value: str) -> str:
    """A MIME parameter: quoted when it is short printable ASCII, else RFC 2231 (`name*=utf-8''%XX`),
    continued over several lines (`name*0*`, `name*1*`, ...) when long."""
    if value.isascii() and value.isprintable() and len(value) <= FOLD_COLUMN:
        return f'{name}="{_QUOTED_SPECIALS.sub(lambda m: chr(92) + m.group(), value)}"'
    encoded = "utf-8''" + quote(value, safe="")
    if len(encoded) + len(name) + 4 <= MAX_LINE_OCTETS // 2:
        return f"{name}*={encoded}"
    pieces = []
    while encoded:
        cut = min(len(encoded), 60)
        while "%" in encoded[max(cut - 2, 0) : cut] and cut < len(encoded):  # never split a %XX
            cut -= 1
        pieces.append(encoded[:cut])
        encoded = encoded[cut:]
    return ";\r\n ".join(f"{name}*{i}*={piece}" for i, piece in enumerate(pieces))


# --- bodies -------------------------------------------------------------------------------------------------


def _boundary() -> str:
    """128 random bits, as the stdlib's generator draws them (not from the OS: a boundary guards no secret,
    and one system call per boundary cost more than composing the rest of the message)."""
    return f"=_{random.getrandbits(128):032x}"


def _base64_lines(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _text_part(subtype: str, body: str) -> bytes:
    """A text part (headers and body): line breaks become CRLF and the body ends with one."""
    lines = _LINE_END.split(body)
    if lines[-1] == "":
        lines.pop()
    if body.isascii() and all(len(line) <= FOLD_COLUMN for line in lines):
        encoding = "7bit"
        payload = "".join(line + "\r\n" for line in lines).encode("ascii")
    else:
        quoted = b"".join(
            binascii.b2a_qp(line.encode("utf-8"), quotetabs=False, istext=False).replace(b"\n", b"\r\n")
            + b"\r\n"
            for line in lines
        )
        data = "".join(line + "\r\n" for line in lines).encode("utf-8")
        encoded = _base64_lines(data)
        encoding, payload = (
            ("quoted-printable", quoted) if len(quoted) <= len(encoded) else ("base64", encoded)
        )
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n'
    ).encode("ascii") + payload


def _file_part(
    attachment: Attachment, maintype: str, subtype: str, content_id: str | None, disposition: str
) -> bytes:
    headers = f"Content-Type: {maintype}/{subtype}\r\nContent-Transfer-Encoding: base64\r\n"
    headers += f"Content-Disposition: {disposition};\r\n {_param('filename', attachment.filename)}\r\n"
    if content_id is not None:
        headers += f"Content-ID: {content_id}\r\n"
    return (headers + "\r\n").encode("ascii") + _base64_lines(attachment.content)


def _multipart(subtype: str, parts: list[bytes], params: str = "") -> bytes:
    """A multipart entity; each part's body keeps its final CRLF (the delimiter brings its own)."""
    boundary = _boundary()
    while any(boundary.encode("ascii") in part for part in parts):  # never in practice: 128 random bits
        boundary = _boundary()
    delimiter = f"--{boundary}".encode("ascii")
    head = f'Content-Type: multipart/{subtype};{params}\r\n boundary="{boundary}"\r\n\r\n'.encode("ascii")
    body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts)
    return head + body + delimiter + b"--\r\n"


def _body(draft: Draft) -> bytes:
    """text → text/plain, html → text/html, both → alternative; inline parts → related; files → mixed."""
    checked = [_check_attachment(i, a) for i, a in enumerate(draft.attachments)]
    for name, text in (("text", draft.text), ("html", draft.html)):
        if text and "\0" in text:
            raise ComposeError(name, "must not contain NUL characters")
        if text and not _encodable(text):
            raise ComposeError(name, "contains a lone surrogate code point, which is not valid Unicode text")
    inline = [
        _file_part(a, maintype, subtype, cid, "inline")
        for a, (maintype, subtype, cid) in zip(draft.attachments, checked, strict=True)
        if cid is not None
    ]
    files = [
        _file_part(a, maintype, subtype, cid, "attachment")
        for a, (maintype, subtype, cid) in zip(draft.attachments, checked, strict=True)
        if cid is None
    ]
    root_type = "text/html" if draft.html else "text/plain"
    if draft.text and draft.html:
        html = _text_part("html", draft.html)
        if inline:  # RFC 2387: the related part names its root's type
            html = _multipart("related", [html, *inline], f' type="{root_type}";')
        entity = _multipart("alternative", [_text_part("plain", draft.text), html])
    else:
        entity = _text_part("html" if draft.html else "plain", draft.html or draft.text or "")
        if inline:
            entity = _multipart("related", [entity, *inline], f' type="{root_type}";')
    if files:
        entity = _multipart("mixed", [entity, *files])
    return entity


def compose(
    draft: Draft,
    *,
    message_id: str,
    now: datetime,
    feedback_id: str | None = None,
    rewrite_html: Callable[[str, str | None], str] | None = None,
) -> ComposedMessage:
    """Build the unsigned message; Bcc recipients are returned as recipients but never appear in headers.

    `rewrite_html(html, recipient)` (open and click tracking) gets the HTML body and the recipient when
    there is exactly one, since the message is stored and signed once for all of them.
    """
    recipients = _unique_recipients([*draft.to, *draft.cc, *draft.bcc])
    if not recipients:
        raise ComposeError("to", "at least one recipient (to, cc or bcc) is required")
    if not draft.text and not draft.html:
        raise ComposeError("text", "a text or an html body is required")
    if bad := line_break_or_control(draft.subject):
        raise ComposeError("subject", f"contains the line break or control character {bad}")
    custom_headers = check_custom_headers(draft.headers)
    if draft.unsubscribe is not None:
        custom_headers = _with_unsubscribe(custom_headers, draft.unsubscribe)
    if rewrite_html is not None and draft.html:
        sole = recipients[0].email if len(recipients) == 1 else None
        draft = replace(draft, html=rewrite_html(draft.html, sole))
    utf8 = any(a.smtputf8 for a in [draft.from_, *draft.reply_to, *recipients])

    fields = [_address_field("From", [draft.from_], utf8)]
    if draft.reply_to:
        fields.append(_address_field("Reply-To", draft.reply_to, utf8))
    if draft.to:
        fields.append(_address_field("To", draft.to, utf8))
    elif not draft.cc:
        fields.append("To: undisclosed-recipients:;\r\n")
    if draft.cc:
        fields.append(_address_field("Cc", draft.cc, utf8))
    fields.append(_subject_field(draft.subject, utf8))
    message_id_value = message_id_header(message_id, draft.from_.domain)
    fields += [
        f"Date: {format_date(now)}\r\n",
        f"Message-ID: {message_id_value}\r\n",
        "MIME-Version: 1.0\r\n",
    ]
    if draft.stream == "broadcast":
        fields.append("Precedence: bulk\r\n")
        if feedback_id is not None:
            fields.append(f"Feedback-ID: {check_feedback_id(feedback_id)}\r\n")
    fields += [_text_field(name, value, utf8) for name, value in custom_headers]
    return ComposedMessage(
        raw="".join(fields).encode("utf-8") + _body(draft),
        message_id_header=message_id_value,
        recipients=recipients,
        smtputf8=utf8,
    )
