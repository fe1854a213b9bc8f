"""Request fields every router shares: ids, cursors, and text that must stay on one line.

Ids are 64-bit in the database (`store.models.MAX_ID`); a number outside 1..MAX_ID names nothing and would
overflow the query, so it is refused with 422 where the request is read. Cursors are opaque to callers
(`base64url("<kind>:<id>")`); one that this API did not hand out is refused the same way. Text fields
are checked by `estafeta.text` (422 naming the field and the character).
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path, Query, Request
from pydantic import AfterValidator, BeforeValidator, Field

from estafeta.api.problems import Problem
from estafeta.ids import MAX_ID
from estafeta.text import free_text, one_line

ADDRESS_OR_DOMAIN = "email-or-domain"
"""OpenAPI string format: an address (`user@example.com`) or a whole domain (`example.com`)."""
SUPPRESSION_CSV = "suppression-csv"
"""OpenAPI string format: CSV whose header names a `value` column, one address or domain a line."""
SENDER_ADDRESS = "sender-address"
"""OpenAPI string format: an address (with or without a display name) on a sending domain of the account."""
SENDING_DOMAIN = "sending-domain"
"""OpenAPI string format: a sending domain of the account."""
IP_POOL = "ip-pool"
"""OpenAPI string format: the name of a pool in the `ip_pools` setting."""


def formatted(name: str) -> Any:
    """`Field` extras documenting a string format (one of the above, or a standard one such as `uri`)."""
    return {"format": name}


Id = Annotated[int, Path(ge=1, le=MAX_ID)]
"""A resource id in the path."""
IdField = Annotated[int, Field(ge=1, le=MAX_ID, strict=True)]
"""A resource id in a request body."""
AfterId = Annotated[int, Query(ge=0, le=MAX_ID, description="`next_cursor` of the previous page")]
"""A plain-number cursor (the last id of the previous page)."""
OneLine = Annotated[
    str,
    AfterValidator(one_line),
    Field(json_schema_extra={"pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029]*$"}),
]
"""Names, subjects and the like: one line, no control characters (they end up in header fields)."""
FreeText = Annotated[
    str,
    AfterValidator(free_text),
    Field(json_schema_extra={"pattern": "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"}),
]
"""Notes and answers: several lines allowed, no other control characters."""


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _written_as_date(value: Any) -> Any:
    """Only RFC 3339 text (or a datetime from Python): a bare number is not read as seconds since 1970."""
    if isinstance(value, datetime) or (isinstance(value, str) and _DATE.match(value.strip())):
        return value
    raise ValueError("must be a date and time such as 2026-01-01T00:00:00Z")


def _moment(value: datetime) -> datetime:
    """An aware datetime in UTC, written with a year between 1900 and 9998: adding a day never overflows."""
    if value.tzinfo is None:
        raise ValueError("needs a time zone, e.g. 2026-01-01T00:00:00Z")
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range: between the years 1900 and 9998") from None
    if not 1900 <= value.year <= 9998:
        raise ValueError("is out of range: between the years 1900 and 9998")
    return utc


Moment = Annotated[
    datetime,
    BeforeValidator(_written_as_date),
    AfterValidator(_moment),
    Field(json_schema_extra={"pattern": r"^(?:19\d\d|[2-8]\d{3}|9[0-8]\d\d|99[0-8]\d|999[0-8])-"}),
]
"""A point in time in a query or body: with a time zone, in a range every computation on it stays in."""


def cursor_pattern(kind: str) -> str:
    """The shape of every cursor `encode_cursor(id, kind)` can return, as a regular expression for the
    OpenAPI document: base64url of `<kind>:` and 1 to 19 digits, without padding.

    Base64 turns each 3 bytes into 4 characters, so after the first group (`<kind>`, `:`, a digit) the
    digits come in groups of three; in each, every character depends on one digit only.
    """
    digits = "0123456789"

    def b64(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    def one_of(chars: set[str]) -> str:
        return "[" + "".join(sorted(chars)) + "]"

    lead = "(?:" + "|".join(sorted({b64(f"{d}00")[:2] for d in digits})) + ")"
    middle = one_of({b64(f"0{d}0")[2] for d in digits})
    last = one_of({b64(f"00{d}")[3] for d in digits})
    group, one, two = (
        lead + middle + last,
        "(?:" + "|".join(sorted(b64(d) for d in digits)) + ")",
        lead + middle,
    )
    head = b64(f"{kind}:0")[:3] + one_of({b64(f"{kind}:{d}")[3] for d in digits})
    return f"^{head}(?:(?:{group}){{0,6}}|(?:{group}){{0,5}}(?:{one}|{two}))$"


def Cursor(kind: str = "e") -> Any:
    """A `cursor` query parameter: the `next_cursor` of the previous page of this kind."""
    return Query(
        None,
        description="`next_cursor` of the previous page",
        json_schema_extra={"pattern": cursor_pattern(kind)},
    )


def encode_cursor(last_id: int, kind: str = "e") -> str:
    return base64.urlsafe_b64encode(f"{kind}:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str = "e") -> int:
    """The id a cursor of this kind carries; 422 for anything this API cannot have handed out."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, binascii.Error) as exc:
        raise _bad_cursor() from exc
    found, _, value = text.partition(":")
    if found != kind or not (value.isascii() and value.isdigit() and len(value) <= 19) or int(value) > MAX_ID:
        raise _bad_cursor()
    return int(value)


def _bad_cursor() -> Problem:
    return Problem(
        422, "cursor is not one this API returned", errors=[{"field": "cursor", "reason": "malformed"}]
    )


TEXT_BODY_SCHEMA: dict[str, Any] = {"type": "string", "pattern": "\\S"}
"""A raw text body (a message, a CSV file): something other than white space."""


async def text_body(request: Request) -> bytes:
    """The raw body; 422 when it is empty or only white space."""
    raw = await request.body()
    if not raw.strip():
        raise Problem(422, "the body is empty", errors=[{"field": "body", "reason": "empty"}])
    return raw
