"""Identifiers: time-ordered message ids that sort by creation and leak nothing, and the range of row ids."""

from __future__ import annotations

import secrets
import time

from estafeta.store.models import MAX_ID

__all__ = ["MAX_ID", "new_message_id", "parse_id"]

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        out.append(_ALPHABET[rem])
    return "".join(reversed(out))


def new_message_id() -> str:
    """`msg_` + 48-bit millisecond timestamp + 80 random bits (26 base32 characters)."""
    millis = int(time.time() * 1000) & ((1 << 48) - 1)
    return "msg_" + _b32(millis, 10) + _b32(secrets.randbits(80), 16)


def parse_id(text: str) -> int | None:
    """The row id a piece of text names (a form field, a command-line argument, a field of a report), or
    None when it is not one: anything but ASCII digits, or a number outside 1..MAX_ID."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_ID)):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None
