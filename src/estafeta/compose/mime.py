"""Build an RFC 5322 / MIME message from what a caller asked for, with the stdlib `email` package."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from email import policy
from email.headerregistry import Address as HeaderAddress
from email.headerregistry import Group, HeaderRegistry
from email.message import MIMEPart
from typing import Literal

from estafeta.compose.addresses import Address
from estafeta.compose.headers import (
    ComposeError,
    check_custom_headers,
    check_feedback_id,
    fold_words,
    format_date,
    line_break_or_control,
    message_id_header,
)


# 7bit transfer encodings keep bodies safe for servers without 8BITMIME; lines stay within 78 columns.
# refold_source="none" writes pre-folded custom headers as they are (see fold_words).
class _CachedHeaderRegistry(HeaderRegistry):
    """The stdlib builds a new header class with `type()` on every lookup; build each one once."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        found = self._classes.get(key)
        if found is None:
            found = self._classes[key] = super().__getitem__(name)
        return found


_HEADERS = _CachedHeaderRegistry()
_ASCII_POLICY = policy.SMTP.clone(cte_type="7bit", refold_source="none", header_factory=_HEADERS)
_UTF8_POLICY = policy.SMTPUTF8.clone(cte_type="7bit", refold_source="none", header_factory=_HEADERS)

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 2045 token
_CONTENT_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})")
_CONTENT_ID = re.compile(r"[!-;=?-~]+")  # visible ASCII without angle brackets


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


def _mailboxes(addresses: list[Address]) -> list[HeaderAddress]:
    return [a.header_address() for a in addresses]


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


def _set_body(message: MIMEPart, draft: Draft) -> None:
    """text → text/plain, html → text/html, both → alternative; inline parts → related; files → mixed."""
    checked = [_check_attachment(i, a) for i, a in enumerate(draft.attachments)]
    for name, body in (("text", draft.text), ("html", draft.html)):
        if body and "\0" in body:
            raise ComposeError(name, "must not contain NUL characters")
        if body and not _encodable(body):
            raise ComposeError(name, "contains a lone surrogate code point, which is not valid Unicode text")
    if draft.text and draft.html:
        message.set_content(draft.text, subtype="plain", charset="utf-8")
        message.add_alternative(draft.html, subtype="html", charset="utf-8")
        related_root = message.get_payload()[1]
    else:
        subtype = "html" if draft.html else "plain"
        message.set_content(draft.html or draft.text or "", subtype=subtype, charset="utf-8")
        related_root = message
    inline = False
    for attachment, (maintype, subtype, content_id) in zip(draft.attachments, checked, strict=True):
        if content_id is not None:
            related_root.add_related(
                attachment.content,
                maintype,
                subtype,
                cid=content_id,
                filename=attachment.filename,
                disposition="inline",
            )
            inline = True
    if inline:
        # RFC 2387 requires the type of the root part on multipart/related.
        related_root.set_param("type", "text/html" if draft.html else "text/plain")
    for attachment, (maintype, subtype, content_id) in zip(draft.attachments, checked, strict=True):
        if content_id is None:
            message.add_attachment(attachment.content, maintype, subtype, filename=attachment.filename)


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
    smtputf8 = any(a.smtputf8 for a in [draft.from_, *draft.reply_to, *recipients])

    message = MIMEPart(policy=_UTF8_POLICY if smtputf8 else _ASCII_POLICY)
    message["From"] = _mailboxes([draft.from_])
    if draft.reply_to:
        message["Reply-To"] = _mailboxes(draft.reply_to)
    if draft.to:
        message["To"] = _mailboxes(draft.to)
    elif not draft.cc:
        message["To"] = Group("undisclosed-recipients")
    if draft.cc:
        message["Cc"] = _mailboxes(draft.cc)
    message["Subject"] = draft.subject
    message["Date"] = format_date(now)
    message_id_value = message_id_header(message_id, draft.from_.domain)
    message["Message-ID"] = message_id_value
    message["MIME-Version"] = "1.0"
    if draft.stream == "broadcast":
        message["Precedence"] = "bulk"
        if feedback_id is not None:
            message["Feedback-ID"] = check_feedback_id(feedback_id)
    for name, value in custom_headers:
        if value.isascii() or smtputf8:
            message.set_raw(name, fold_words(name, value))
        else:
            message[name] = value  # RFC 2047 encoded words
    _set_body(message, draft)
    return ComposedMessage(
        raw=message.as_bytes(),
        message_id_header=message_id_value,
        recipients=recipients,
        smtputf8=smtputf8,
    )
