"""Rows the store tests write directly, without going through the accept path."""

from __future__ import annotations

from estafeta.store import messages

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
