"""Identifiers: time-ordered message ids that sort by creation and leak nothing, and the range of row ids."""

from __future__ import annotations

import os
import threading
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


class _RandomPool:
    """Bits from the operating system's CSPRNG, fetched in bulk: each `os.urandom` call releases the GIL,
    and an event loop that releases it once per message waits behind busy threads to get it back."""

    _FETCH = 4000

    def __init__(self) -> None:
        self._bytes = bytearray()
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._bytes.clear)  # a forked child must not reuse them

    def bits80(self) -> int:
        with self._lock:
            if len(self._bytes) < 10:
                self._bytes[:] = os.urandom(self._FETCH)
            value = int.from_bytes(self._bytes[-10:])
            del self._bytes[-10:]
        return value


_pool = _RandomPool()


def new_message_id() -> str:
    """`msg_` + 48-bit millisecond timestamp + 80 random bits (26 base32 characters)."""
    millis = int(time.time() * 1000) & ((1 << 48) - 1)
    return "msg_" + _b32(millis, 10) + _b32(_pool.bits80(), 16)


def parse_id(text: str) -> int | None:
    """The row id a piece of text names (a form field, a command-line argument, a field of a report), or
    None when it is not one: anything but ASCII digits, or a number outside 1..MAX_ID."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_ID)):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None
