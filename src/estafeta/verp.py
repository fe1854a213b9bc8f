"""VERP return paths: `bounces+<token>@<domain>` names the queue entry a bounce is about.

The token is the entry id plus a truncated HMAC, so a forged bounce cannot suppress someone else's recipient.
"""

from __future__ import annotations

import hashlib
import hmac

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(value: int) -> str:
    out = ""
    while True:
        value, rem = divmod(value, 36)
        out = _DIGITS[rem] + out
        if value == 0:
            return out


def _mac(secret: bytes, body: str) -> str:
    return hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()[:10]


def make_token(delivery_id: int, secret: bytes) -> str:
    body = _base36(delivery_id)
    return f"{body}-{_mac(secret, body)}"


def return_path(delivery_id: int, secret: bytes, domain: str) -> str:
    return f"bounces+{make_token(delivery_id, secret)}@{domain}"


def parse_token(token: str, secret: bytes) -> int | None:
    """The entry id in a token, or None when the token is malformed or its signature is wrong."""
    body, _, mac = token.lower().partition("-")
    if not body or not mac or any(c not in _DIGITS for c in body):
        return None
    if not hmac.compare_digest(mac, _mac(secret, body)):
        return None
    return int(body, 36)
