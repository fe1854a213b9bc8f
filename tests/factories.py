"""Rows the store tests write directly, without going through the accept path."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

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
