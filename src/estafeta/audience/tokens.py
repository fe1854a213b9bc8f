"""Signed tokens in the links of list mail: confirm a subscription, unsubscribe, open the preference center.

A token is its ids in base 36, dot-separated, signed with itsdangerous under a salt per purpose, so a token
made for one purpose is worthless for another. It only uses `[0-9a-zA-Z._-]`, which keeps it valid both in
a URL path and as the local part of the `mailto:` unsubscribe address (where it must fit in 64 octets).
Confirmation tokens carry a timestamp from the platform clock and expire.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, Signer, TimestampSigner

from estafeta.clock import Clock

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(value: int) -> str:
    out = ""
    while True:
        value, rem = divmod(value, 36)
        out = _DIGITS[rem] + out
        if value == 0:
            return out


def _encode(values: list[int]) -> str:
    return ".".join(_base36(v) for v in values)


def _decode(body: str) -> list[int] | None:
    parts = body.split(".")
    if not all(p and all(c in _DIGITS for c in p) for p in parts):
        return None
    return [int(p, 36) for p in parts]


class _ClockSigner(TimestampSigner):
    """Timestamps from the platform clock, so expiry is testable."""

    def __init__(self, secret: bytes, salt: str, clock: Clock) -> None:
        super().__init__(secret, salt=salt)
        self.clock = clock

    def get_timestamp(self) -> int:
        return int(self.clock.now().timestamp())


@dataclass(frozen=True)
class UnsubscribeToken:
    contact_id: int
    list_id: int
    campaign_id: int | None


class Tokens:
    def __init__(self, secret: bytes, clock: Clock) -> None:
        self._unsubscribe = Signer(secret, salt="estafeta.unsubscribe")
        self._preferences = Signer(secret, salt="estafeta.preferences")
        self._confirm = _ClockSigner(secret, "estafeta.confirm", clock)

    def unsubscribe(self, contact_id: int, list_id: int, campaign_id: int | None = None) -> str:
        ids = [contact_id, list_id] + ([campaign_id] if campaign_id is not None else [])
        return self._unsubscribe.sign(_encode(ids)).decode()

    def read_unsubscribe(self, token: str) -> UnsubscribeToken | None:
        ids = _unsign(self._unsubscribe, token)
        if ids is None or len(ids) not in (2, 3):
            return None
        return UnsubscribeToken(ids[0], ids[1], ids[2] if len(ids) == 3 else None)

    def preferences(self, contact_id: int) -> str:
        return self._preferences.sign(_encode([contact_id])).decode()

    def read_preferences(self, token: str) -> int | None:
        ids = _unsign(self._preferences, token)
        return ids[0] if ids is not None and len(ids) == 1 else None

    def confirm(self, contact_id: int, list_id: int) -> str:
        return self._confirm.sign(_encode([contact_id, list_id])).decode()

    def read_confirm(self, token: str, max_age_seconds: float) -> tuple[int, int] | None:
        try:
            body = self._confirm.unsign(token, max_age=int(max_age_seconds)).decode()
        except (BadSignature, UnicodeDecodeError):
            return None  # includes SignatureExpired
        ids = _decode(body)
        return (ids[0], ids[1]) if ids is not None and len(ids) == 2 else None


def _unsign(signer: Signer, token: str) -> list[int] | None:
    try:
        return _decode(signer.unsign(token).decode())
    except (BadSignature, UnicodeDecodeError):
        return None
