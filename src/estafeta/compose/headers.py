"""Header rules shared by composed messages and by messages that arrive already composed (SMTP relay)."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from email.errors import NonASCIILocalPartDefect
from email.message import Message
from email.utils import format_datetime
from typing import Any, TypeVar

MAX_LINE_OCTETS = 998  # RFC 5322 section 2.1.1, excluding CRLF
FOLD_COLUMN = 78  # RFC 5322 section 2.1.1: lines SHOULD stay within 78 characters

# ftext (RFC 5322 section 3.6.8): printable ASCII except the colon; no space either.
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_FIELD_NAME_BYTES = re.compile(rb"[!-9;-~]+")
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# Google's Feedback-ID: up to three optional identifiers, then the mandatory SenderId, colon-separated.
_FEEDBACK_ID = re.compile(r"(?:[!-9;-~]*:){0,3}[!-9;-~]+")
_BARE_LINE_BREAK = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_OVERLONG_LINE = re.compile(rb"[^\r\n]{%d}" % (MAX_LINE_OCTETS + 1))
_LINE_BREAKS = {"\u2028", "\u2029"}
_POLICY = policy.SMTPUTF8

RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "sender",
        "date",
        "message-id",
        "subject",
        "reply-to",
        "mime-version",
        "dkim-signature",
        "return-path",
        "received",
        "precedence",
        "feedback-id",
    }
)
_ADDRESS_FIELDS = ("From", "Sender", "Reply-To", "To", "Cc", "Bcc")
# Fields that RFC 5322 section 3.6 allows at most once.
_SINGLETON_FIELDS = (*_ADDRESS_FIELDS, "Date", "Message-ID", "Subject", "In-Reply-To", "References")


class ComposeError(ValueError):
    """A message that cannot be built or accepted; `field` says where (e.g. "headers.X-Foo")."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def format_date(now: datetime) -> str:
    """RFC 5322 date-time in UTC."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return format_datetime(now.astimezone(UTC))


def message_id_header(message_id: str, domain: str) -> str:
    """`<message_id@domain>`; both halves must be dot-atoms so the result is a valid msg-id."""
    if not _DOT_ATOM.fullmatch(message_id):
        raise ComposeError("message_id", f"{message_id!r} is not a dot-atom")
    if not _DOT_ATOM.fullmatch(domain):
        raise ComposeError("message_id", f"the domain {domain!r} is not a dot-atom")
    return f"<{message_id}@{domain}>"


def line_break_or_control(text: str, *, allow_tab: bool = True) -> str | None:
    """The first character that would break a header line, is a control character or a lone surrogate
    (which no UTF-8 message can carry), as U+XXXX."""
    for char in text:
        category = unicodedata.category(char)
        if (
            char in _LINE_BREAKS
            or category == "Cs"
            or (category == "Cc" and not (allow_tab and char == "\t"))
        ):
            return f"U+{ord(char):04X}"
    return None


def check_feedback_id(value: str) -> str:
    if not _FEEDBACK_ID.fullmatch(value):
        raise ComposeError(
            "feedback_id",
            "must be up to four colon-separated fields of printable ASCII ending with the SenderId, "
            "like 'a:b:c:SenderId'",
        )
    return value


def check_custom_headers(headers: dict[str, str]) -> list[tuple[str, str]]:
    """Validate caller-supplied headers: real field names, not reserved, no duplicates, no line breaks."""
    seen: set[str] = set()
    checked = []
    for name, value in headers.items():
        field = f"headers.{name}"
        if not _FIELD_NAME.fullmatch(name):
            raise ComposeError(field, "a header name must be printable ASCII without spaces or colons")
        lower = name.lower()
        if lower in RESERVED_HEADERS or lower.startswith("content-"):
            raise ComposeError(field, f"{name} is set by the platform and cannot be supplied")
        if lower in seen:
            raise ComposeError(field, f"{name} is given more than once")
        seen.add(lower)
        if "\r" in value or "\n" in value:
            raise ComposeError(field, "the value must not contain CR or LF")
        if bad := line_break_or_control(value):
            raise ComposeError(field, f"the value contains the control character {bad}")
        checked.append((name, value.strip()))
    return checked


def fold_words(name: str, value: str) -> str:
    """Fold a header value at existing whitespace only, returning the value part (lines joined by LF).

    The stdlib folder turns words longer than a line into RFC 2047 encoded words, which would break the
    URLs of List-Unsubscribe; folding only at whitespace keeps every word intact.
    """
    chunks = re.findall(r"[ \t]*[^ \t]+", value)
    if not chunks:
        return value
    lines = []
    current = f"{name}: {chunks[0]}"
    for chunk in chunks[1:]:
        if len(current) + len(chunk) > FOLD_COLUMN:
            lines.append(current)
            current = chunk
        else:
            current += chunk
    lines.append(current)
    if any(len(line.encode()) > MAX_LINE_OCTETS for line in lines):
        raise ComposeError(f"headers.{name}", f"contains a word longer than {MAX_LINE_OCTETS} octets")
    return "\n".join(lines)[len(name) + 2 :]


def _snippet(line: bytes) -> str:
    text = line[:40].decode("utf-8", "backslashreplace")
    return text + ("..." if len(line) > 40 else "")


def _check_line_structure(raw: bytes) -> bytes:
    """Line-level checks (CRLF only, 998-octet lines, field names); return the header section."""
    if not raw.strip():
        raise ComposeError("message", "the message is empty")
    # Counting and splitting run in C; the regular expressions only run to locate a problem for the reply.
    crlf = raw.count(b"\r\n")
    if (raw.count(b"\r") != crlf or raw.count(b"\n") != crlf) and (bare := _BARE_LINE_BREAK.search(raw)):
        kind = "CR" if bare.group() == b"\r" else "LF"
        line = raw.count(b"\n", 0, bare.start()) + 1
        raise ComposeError("message", f"bare {kind} on line {line}: lines must end with CRLF")
    if max(map(len, raw.split(b"\r\n"))) > MAX_LINE_OCTETS and (overlong := _OVERLONG_LINE.search(raw)):
        line = raw.count(b"\n", 0, overlong.start()) + 1
        raise ComposeError("message", f"line {line} is longer than {MAX_LINE_OCTETS} octets")
    if raw.startswith(b"\r\n"):
        raise ComposeError("headers", "the message has no header section")
    end = raw.find(b"\r\n\r\n")
    header_section = raw if end == -1 else raw[: end + 2]
    for number, line in enumerate(header_section.split(b"\r\n"), 1):
        if not line or line[:1] in (b" ", b"\t"):
            if number == 1:
                raise ComposeError("headers", "the message starts with a continuation line")
            continue
        name, colon, _ = line.partition(b":")
        if not colon or not _FIELD_NAME_BYTES.fullmatch(name):
            raise ComposeError(
                "headers",
                f"line {number} is not a header field (printable ASCII name, then ':'): {_snippet(line)!r}",
            )
    return header_section


def _decode_header_section(header_section: bytes) -> str:
    """Headers are ASCII, or UTF-8 in an internationalised message (RFC 6532)."""
    try:
        return header_section.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ComposeError("headers", f"bytes that are not UTF-8 at offset {exc.start}") from None


def _parsed(message: Message, name: str) -> Any:
    """The header as a stdlib header object (address, date or msg-id header: the class varies)."""
    try:
        return message[name]
    except Exception:
        # The stdlib parser raises assorted exceptions (IndexError, HeaderParseError) on malformed values.
        raise ComposeError(f"headers.{name}", "cannot be parsed") from None


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR_SPEC = rf"{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*"
# One mailbox as nearly every sender writes it, `local@domain`, `<local@domain>` or `Name <local@domain>` in
# plain ASCII atoms, which the stdlib's parser finds valid (the tests compare the two).
_PHRASE = rf"{_ATOM}(?:[ \t]+{_ATOM})*"
_PLAIN_MAILBOX = re.compile(rf"[ \t]*(?:{_ADDR_SPEC}|(?:{_PHRASE}[ \t]*)?<{_ADDR_SPEC}>)[ \t]*")


@functools.lru_cache(maxsize=4096)
def _address_list(name: str, value: str) -> int:
    """How many mailboxes a valid address field names, or `ComposeError`. Parsing an address list is the
    costly part of checking a relayed message: senders repeat their From, so each value is parsed once,
    and a single plain mailbox (To, most often different each time) is recognised without parsing."""
    if _PLAIN_MAILBOX.fullmatch(value):
        return 1
    return _parsed_address_list(name, value)


def _parsed_address_list(name: str, value: str) -> int:
    """`_address_list` by the stdlib's parser, for any value."""
    try:
        header = _POLICY.header_fetch_parse(name, value)
    except Exception:
        # The stdlib parser raises assorted exceptions (IndexError, HeaderParseError) on malformed values.
        raise ComposeError(f"headers.{name}", "cannot be parsed") from None
    defects = [d for d in header.defects if not isinstance(d, NonASCIILocalPartDefect)]
    if defects:
        raise ComposeError(f"headers.{name}", f"is not a valid address list: {defects[0]}")
    for address in header.addresses:
        if not address.username or not address.domain:
            raise ComposeError(f"headers.{name}", f"{str(address)!r} is not a complete address")
    return len(header.addresses)


def _check_fields(message: Message) -> None:
    counts = Counter(key.lower() for key in message)
    if counts["from"] == 0:
        raise ComposeError("headers.From", "a From header is required")
    for name in _SINGLETON_FIELDS:
        if counts[name.lower()] > 1:
            times = counts[name.lower()]
            raise ComposeError(f"headers.{name}", f"appears {times} times; at most once is allowed")
    raw = {key.lower(): value for key, value in message.raw_items()}  # each address field is a singleton
    mailboxes = {
        name: _address_list(name, raw[name.lower()]) for name in _ADDRESS_FIELDS if counts[name.lower()]
    }
    if not mailboxes["From"]:
        raise ComposeError("headers.From", "must name at least one mailbox")
    if mailboxes["From"] > 1 and "Sender" not in mailboxes:
        raise ComposeError("headers.Sender", "is required when From names more than one mailbox")
    if counts["date"]:
        date = _parsed(message, "Date")
        if date.defects or date.datetime is None:
            raise ComposeError("headers.Date", f"{str(date)!r} is not an RFC 5322 date")
        if date.datetime.tzinfo is None:
            raise ComposeError("headers.Date", f"{str(date)!r} has no time zone")
    if counts["message-id"] and _parsed(message, "Message-ID").defects:
        raise ComposeError("headers.Message-ID", "is not a valid msg-id like <id@domain>")


def header_message(text: str) -> Message:
    """The headers as `Parser(policy=_POLICY).parsestr(text, headersonly=True)` reads them, for a header
    section `_check_line_structure` passed (only CRLF line ends, each line a field or its continuation):
    built directly, without the feed parser's machinery, which took most of the time of checking a
    message. Defects of the message as a whole (a multipart type without parts) are not gathered: nothing
    here reads them."""
    message = (_POLICY.message_factory or Message)(policy=_POLICY)
    lines = text.split("\r\n")
    last = lines.pop()  # what follows the last CRLF: empty, or a last field without one
    fields: list[list[str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            fields[-1].append(line + "\r\n")
        else:
            fields.append([line + "\r\n"])
    if last:
        if last[:1] in (" ", "\t"):
            fields[-1].append(last)
        else:
            fields.append([last])
    for source in fields:
        message.set_raw(*_POLICY.header_source_parse(source))
    message.set_payload("")
    return message


def check_message(raw: bytes) -> tuple[bytes, Message]:
    """Check a message's lines and header fields against RFC 5322 (raising `ComposeError` with the first
    problem); returns its header section and the parsed headers."""
    header_section = _check_line_structure(raw)
    # Parsed from text: BytesParser would leave UTF-8 header bytes undecoded and report them as defects.
    message = header_message(_decode_header_section(header_section))
    _check_fields(message)
    return header_section, message


def ensure_headers(raw: bytes, *, message_id: str, sending_domain: str, now: datetime) -> tuple[bytes, str]:
    """Check a ready-made message against RFC 5322 and add Message-ID and Date when missing.

    Everything already present is kept byte for byte (a signature made upstream stays intact); missing
    fields are appended to the end of the header section. Returns the message and its Message-ID.
    """
    header_section, message = check_message(raw)
    rest = raw[len(header_section) :]
    if not header_section.endswith(b"\r\n"):
        header_section += b"\r\n"
    added = []
    if "Date" not in message:
        added.append(f"Date: {format_date(now)}\r\n")
    if "Message-ID" in message:
        message_id_value = str(message["Message-ID"]).strip()
    else:
        message_id_value = message_id_header(message_id, sending_domain)
        added.append(f"Message-ID: {message_id_value}\r\n")
    return header_section + "".join(added).encode("ascii") + rest, message_id_value


CACHED_HEADER_CHARS = 998  # header values longer than a line are parsed each time, not remembered
_Value = TypeVar("_Value", str, bytes)
_Parsed = TypeVar("_Parsed")


def header_cache(parse: Callable[[tuple[_Value, ...]], _Parsed]) -> Callable[[tuple[_Value, ...]], _Parsed]:
    """`functools.lru_cache` for parsing header values that senders repeat (their From, their Reply-To),
    kept to values of usual length, so that what it holds stays small whatever clients send."""
    cached = functools.lru_cache(maxsize=1024)(parse)

    @functools.wraps(parse)
    def remembered(values: tuple[_Value, ...]) -> _Parsed:
        return cached(values) if sum(map(len, values)) <= CACHED_HEADER_CHARS else parse(values)

    remembered.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return remembered
