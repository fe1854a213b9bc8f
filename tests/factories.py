"""Rows the store tests write directly, without going through the accept path."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from estafeta.audit import SYSTEM
from estafeta.config import Settings
from estafeta.core import Core
from estafeta.dkim import DkimKey
from estafeta.sandbox import dns_settings
from estafeta.store import events, messages
from estafeta.store.db import Database
from estafeta.world import World


@contextmanager
def gate_held(db: Database) -> Iterator[list[float]]:
    """A transaction of `db` (another process's, as far as the writer gate can tell: its own descriptor)
    holding SQLite's writer gate on a thread until the block ends. Yields a list that then holds the
    monotonic time it let go."""
    inside, leave = threading.Event(), threading.Event()
    released: list[float] = []

    def hold(conn: Connection) -> None:
        inside.set()
        leave.wait(10)
        released.append(time.monotonic())

    thread = threading.Thread(target=db.call, args=(hold,))
    thread.start()
    try:
        assert inside.wait(10)
        yield released
    finally:
        leave.set()
        thread.join(10)


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


def sandbox_dns(world: World) -> dict[str, Any]:
    """Settings of a platform whose domains publish their records in `world`'s DNS and are verified there."""
    return dns_settings(world.dns_address)


async def add_verified_domain(
    core: Core, account_id: int, name: str, algorithm: str | None = None
) -> DkimKey:
    """Register a sending domain as an operator does: `domains add` publishes its records (in a sandbox) and
    verifies them; fails when the domain did not verify."""
    _, key = await core.domains.add(account_id, name, algorithm, actor=SYSTEM)
    status = await core.verification.status(name)
    assert status.may_send, f"{name} is {status.state}: {status.report and status.report.problems()}"
    return key


async def add_sender(core: Core, name: str, *domains: str, algorithm: str | None = None) -> Sender:
    """An account with verified sending domains and an API key, made through the core as an operator makes
    them (the core's settings include `sandbox_dns`)."""
    account = await core.accounts.create(name, actor=SYSTEM)
    keys = [await add_verified_domain(core, account.id, domain, algorithm) for domain in domains]
    token = (await core.api_keys.create(account.id, "tests", actor=SYSTEM)).token
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
