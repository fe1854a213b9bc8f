"""Creating lists: a name, the From address of its mail, and whether subscribers must confirm."""

from __future__ import annotations

import secrets
from datetime import datetime

from estafeta.compose import AddressError, parse_address
from estafeta.store import accounts as account_store
from estafeta.store import audience as store
from estafeta.store.db import Database
from estafeta.text import TextError, one_line


class AudienceError(ValueError):
    """A request about lists, contacts or campaigns that cannot be carried out; `field` names the input."""

    def __init__(self, field: str, reason: str, status: int = 422) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status


async def sender_address(db: Database, account_id: int, value: str, field: str = "from") -> str:
    """Check a From address: valid, and on a sending domain of the account (so its mail can be signed)."""
    try:
        address = parse_address(value)
    except AddressError as exc:
        raise AudienceError(field, exc.reason) from exc
    domain = await db.run(account_store.find_domain, address.domain)
    if domain is None or domain.account_id != account_id:
        raise AudienceError(field, f"{address.domain} is not a sending domain of this account")
    return address.header_value()


def name_text(value: str, field: str = "name") -> str:
    """A name or subject as it is stored: one line without control characters (it ends up in headers)."""
    try:
        return " ".join(one_line(value).split())
    except TextError as exc:
        raise AudienceError(field, str(exc)) from exc


async def create_list(
    db: Database, account_id: int, name: str, from_address: str, double_opt_in: bool, now: datetime
) -> store.ListRow:
    name = name_text(name)
    if not name:
        raise AudienceError("name", "a list needs a name")
    if await db.run(store.find_list_by_name, account_id, name) is not None:
        raise AudienceError("name", f"a list named {name!r} exists already", status=409)
    sender = await sender_address(db, account_id, from_address, "from_address")
    return await db.run(
        store.create_list, account_id, name, secrets.token_urlsafe(9), sender, double_opt_in, now
    )
