"""The audit log of operator and security-relevant actions: who did what to which account, when, from where.

`record` is called by the service that makes a change, inside the transaction of that change, so a change
without its entry (or an entry without its change) cannot be committed. Whichever edge the action came in
by (API, dashboard, command line, the scheduler), the service receives an `Actor` naming it:

* `admin:<key prefix>`: a platform-admin key, `api:<key prefix>`: an account's API key,
* `user:<id>/<email>`: a dashboard user, `cli:<os user>`: the command line, `system`: the platform itself.

Details are a small dict of plain values. A detail whose name says it holds a secret (a password, a token,
key material) is refused with `SecretDetail`: a secret must never be written. Text that looks like a
credential anyway (an API or admin key, a bearer token, a password in a URL, a PEM private key) is
redacted wherever it appears, in the target and the details alike.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from estafeta.store import audit as store
from estafeta.store.audit import AuditFilter, AuditRow
from estafeta.store.db import Database

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

__all__ = [
    "SYSTEM",
    "Actor",
    "AuditFilter",
    "AuditLog",
    "AuditRow",
    "SecretDetail",
    "cli_actor",
    "record",
    "redact",
    "request_origin",
    "user_name",
]

REDACTED = "[redacted]"
MAX_TEXT = 500  # longer detail text is cut: the log says what happened, it does not keep documents
MAX_DETAILS = 20
MAX_TARGET = 400  # the column's width

Scalar = str | int | float | bool | None
Detail = Scalar | list[Scalar]


@dataclass(frozen=True)
class Actor:
    """Who acts (`name`, as entries show it) and from where (`origin`: the client's address, or "cli" or
    "system")."""

    name: str
    origin: str

    @classmethod
    def admin_key(cls, prefix: str, origin: str) -> Actor:
        return cls(f"admin:{prefix}", origin)

    @classmethod
    def api_key(cls, prefix: str, origin: str) -> Actor:
        return cls(f"api:{prefix}", origin)

    @classmethod
    def user(cls, user_id: int, email: str, origin: str) -> Actor:
        return cls(user_name(user_id, email), origin)


SYSTEM = Actor("system", "system")


def user_name(user_id: int, email: str) -> str:
    """How entries name a dashboard user, as actor or target: `user:<id>/<email>`."""
    return f"user:{user_id}/{email}"


def request_origin(request: HTTPConnection) -> str:
    """The client's address, as entries keep it for the API and the dashboard."""
    return request.client.host if request.client else "unknown"


def cli_actor() -> Actor:
    """The operating-system user running the command line."""
    try:
        name = getpass.getuser()
    except OSError:  # no login name for this uid (containers)
        name = f"uid {os.getuid()}"
    return Actor(f"cli:{name}", "cli")


class SecretDetail(ValueError):
    """A detail named like a secret was given to the audit log."""


_SECRET_NAME = re.compile(
    r"pass(?:word|wd|phrase)?$|secret|token|private[_ -]?key|key[_ -]?material|^(?:api[_ -]?)?key$|cookie",
    re.IGNORECASE,
)
# (pattern, replacement): the visible part keeps what identifies a credential (a key's prefix, a URL's user),
# never what proves it.
_CREDENTIALS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b(est(?:adm)?_[A-Za-z0-9]+_)[A-Za-z0-9_\-]+"), rf"\1{REDACTED}"),
    (re.compile(r"\b(Bearer\s+)\S+", re.IGNORECASE), rf"\1{REDACTED}"),
    (re.compile(r"(://[^/\s:@]*:)[^/\s@]+@"), rf"\1{REDACTED}@"),
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL),
        REDACTED,
    ),
]


def redact(text: str) -> str:
    """`text` with anything that looks like a credential replaced by `[redacted]`."""
    for pattern, replacement in _CREDENTIALS:
        text = pattern.sub(replacement, text)
    return text


def _scalar(value: object) -> Scalar:
    if isinstance(value, str):
        return redact(value[:MAX_TEXT])
    if value is None or isinstance(value, bool | int | float):
        return value
    raise TypeError(f"an audit detail is a plain value or a list of them, not {type(value).__name__}")


def _clean(value: object) -> Detail:
    if isinstance(value, list | tuple):
        return [_scalar(item) for item in value]
    return _scalar(value)


def clean_details(details: Mapping[str, object]) -> dict[str, Detail]:
    """The details as stored: secrets refused, credentials redacted, text shortened."""
    if len(details) > MAX_DETAILS:
        raise ValueError(f"an audit entry keeps at most {MAX_DETAILS} details")
    secret = sorted(name for name in details if _SECRET_NAME.search(name))
    if secret:
        raise SecretDetail(f"audit details never hold secrets; refused: {', '.join(secret)}")
    return {name: _clean(value) for name, value in details.items()}


def record(
    conn: Connection,
    actor: Actor,
    action: str,
    *,
    at: datetime,
    account_id: int | None = None,
    target: str = "",
    details: Mapping[str, object] | None = None,
) -> int:
    """Append one entry in the caller's transaction; `action` is dotted (`review.approve`), `target` names
    what was acted upon (`review:12`, `domain:example.com`). Returns the entry's id."""
    return store.add_entry(
        conn,
        at=at,
        actor=actor.name,
        action=action,
        account_id=account_id,
        target=redact(target)[:MAX_TARGET],
        details=clean_details(details or {}),
        origin=actor.origin,
    )


class AuditLog:
    """Reads the audit log (the services write it through `record`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def entries(
        self, where: AuditFilter, *, before_id: int | None = None, limit: int = 100
    ) -> list[AuditRow]:
        """Entries newest first, filtered; `before_id` is the cursor."""
        return await self.db.run(store.list_entries, where, before_id=before_id, limit=limit)
