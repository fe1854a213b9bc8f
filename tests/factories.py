"""Rows the store tests write directly, without going through the accept path."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from estafeta.config import Settings
from estafeta.core import Core
from estafeta.dkim import DkimKey
from estafeta.store import events, messages

RAW = b"From: a@acme.test\r\nSubject: s\r\n\r\nbody\r\n"


def new_message(
    message_id: str, account_id: int, recipients: list[str], **fields: object
) -> messages.NewMessage:
    """A transactional message from a@acme.test to `recipients`; `fields` override any other column."""
    values: dict[str, object] = {
        "id": message_id,
        "account_id": account_id,
        "stream": "transactional",
        "source": "api",
        "from_address": "a@acme.test",
        "subject": "s",
        "message_id_header": f"<{message_id}@acme.test>",
        "raw": RAW,
        "smtputf8": False,
        "recipients": recipients,
        **fields,
    }
    return messages.NewMessage(**values)  # type: ignore[arg-type]


def add_event(
    conn: Connection,
    *,
    account_id: int,
    type: str,
    now: datetime,
    message_id: str | None = None,
    recipient: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """One event row, recorded the way the platform records every event."""
    events.record(conn, [events.NewEvent(account_id, type, data or {}, message_id, recipient)], now)


@dataclass(frozen=True)
class Sender:
    account_id: int
    keys: list[DkimKey]
    token: str  # an API key


async def add_sender(core: Core, name: str, *domains: str, algorithm: str | None = None) -> Sender:
    """An account with sending domains and an API key, made through the core as an operator makes them."""
    account = await core.accounts.create(name)
    keys = [(await core.domains.add(account.id, domain, algorithm))[1] for domain in domains]
    token = (await core.api_keys.create(account.id, "tests")).token
    return Sender(account.id, keys, token)


def add_sender_now(settings: Settings, name: str, *domains: str, algorithm: str | None = None) -> Sender:
    """`add_sender` from synchronous code (even inside a running event loop), on a core of its own."""

    async def work() -> Sender:
        core = Core(settings)
        try:
            return await add_sender(core, name, *domains, algorithm=algorithm)
        finally:
            core.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work()).result()
