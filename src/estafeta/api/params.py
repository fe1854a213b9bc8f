"""Request fields every router shares: ids, cursors, and text that must stay on one line.

Ids are 64-bit in the database (`store.models.MAX_ID`); a number outside 1..MAX_ID names nothing and would
overflow the query, so it is refused with 422 where the request is read. Cursors are opaque to callers
(`base64url("<kind>:<id>")`); one that this API did not hand out is refused the same way. Text fields
are checked by `estafeta.text` (422 naming the field and the character).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, Field

from estafeta.api.problems import Problem
from estafeta.ids import MAX_ID
from estafeta.text import free_text, one_line

Id = Annotated[int, Path(ge=1, le=MAX_ID)]
"""A resource id in the path."""
IdField = Annotated[int, Field(ge=1, le=MAX_ID)]
"""A resource id in a request body."""
AfterId = Annotated[int, Query(ge=0, le=MAX_ID, description="`next_cursor` of the previous page")]
"""A plain-number cursor (the last id of the previous page)."""
OneLine = Annotated[str, AfterValidator(one_line)]
"""Names, subjects and the like: one line, no control characters (they end up in header fields)."""
FreeText = Annotated[str, AfterValidator(free_text)]
"""Notes and answers: several lines allowed, no other control characters."""


def _moment(value: datetime) -> datetime:
    """An aware datetime in UTC between the years 1900 and 9998, where adding a day never overflows."""
    if value.tzinfo is None:
        raise ValueError("needs a time zone, e.g. 2026-01-01T00:00:00Z")
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range: between the years 1900 and 9998") from None
    if not 1900 <= utc.year <= 9998:
        raise ValueError("is out of range: between the years 1900 and 9998")
    return utc


Moment = Annotated[datetime, AfterValidator(_moment)]
"""A point in time in a query or body: with a time zone, in a range every computation on it stays in."""


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
