"""Group commit: the messages of concurrent callers are written in shared transactions.

What concurrent callers hand over while one transaction is being written goes into the next one, so many
sessions share one trip to the database thread and one fsync, and each caller still resumes only once the
transaction holding its messages has committed. Each caller's rows first pass its gate (the policy gate,
`estafeta.accept.gate`) inside that transaction.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from estafeta.accept.errors import AcceptError
from estafeta.store import messages as message_store
from estafeta.store.db import Database, DatabaseBusy

Rows = list[message_store.NewMessage]
Gate = Callable[[Connection, Rows, datetime, dict[int, Any]], Rows]
"""Runs in the storing transaction before rows are written: returns them as they are to be stored (the
policy gate moves suppressed recipients aside) or raises `AcceptError` to refuse them, and nothing of
them is written. The dict is the gate's own scratch for the transaction, shared by its entries."""
StoredHook = Callable[[Connection, Rows], None]
"""Store work committed with the messages, in their transaction, given the rows as stored."""


@dataclass
class _Pending:
    rows: Rows
    now: datetime
    committed: asyncio.Future[Rows]
    gate: Gate | None = None
    hook: StoredHook | None = None


class GroupCommit:
    """Writes the messages of concurrent callers in shared transactions (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None

    async def commit(
        self, rows: Rows, now: datetime, *, gate: Gate | None = None, hook: StoredHook | None = None
    ) -> Rows:
        """Return the rows as stored once they (and what `hook` writes) are committed; raise the gate's
        `AcceptError`, or what the database raised, if they were not stored."""
        entry = _Pending(rows, now, asyncio.get_running_loop().create_future(), gate, hook)
        self._pending.append(entry)
        if self._writer is None:
            # A task of its own, so that a caller who goes away (a dropped connection) stops no one's commit.
            self._writer = asyncio.create_task(self._write(), name="accept-commit")
        return await entry.committed

    async def _write(self) -> None:
        batch: list[_Pending] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    outcomes = await self.db.run(store_batch, batch)
                except DatabaseBusy as exc:  # each alone would wait as long again
                    for entry in batch:
                        _settle(entry, exc)
                    continue
                except Exception as exc:
                    if len(batch) == 1:
                        _settle(batch[0], exc)
                        continue
                    # One caller's rows must not fail the others': write each on its own.
                    for entry in batch:
                        await self._write_alone(entry)
                    continue
                for entry, outcome in zip(batch, outcomes, strict=True):
                    _settle(entry, outcome)
        finally:
            self._writer = None
            for entry in [*batch, *self._pending]:  # only when cancelled: nothing is left unanswered
                entry.committed.cancel()
            self._pending = []

    async def _write_alone(self, entry: _Pending) -> None:
        try:
            (outcome,) = await self.db.run(store_batch, [entry])
        except Exception as exc:
            outcome = exc
        _settle(entry, outcome)


def store_batch(conn: Connection, batch: list[_Pending]) -> list[Rows | Exception]:
    """One transaction for a batch: each entry passes its gate (an account's entries in the order they
    came, so each sees what the earlier ones queued) and the accepted rows are written together.

    Accounts are taken in id order, so that two processes' transactions lock account rows in the same
    order and never wait for each other in a circle."""
    outcomes: list[Rows | Exception] = [[] for _ in batch]
    views: dict[int, Any] = {}
    stored: Rows = []
    hooks: list[message_store.StoreHook] = []
    by_account = sorted(range(len(batch)), key=lambda i: batch[i].rows[0].account_id if batch[i].rows else 0)
    for index in by_account:
        entry = batch[index]
        try:
            rows = entry.rows if entry.gate is None else entry.gate(conn, entry.rows, entry.now, views)
        except AcceptError as exc:
            outcomes[index] = exc
            continue
        outcomes[index] = rows
        stored.extend(rows)
        if entry.hook is not None:
            hooks.append(functools.partial(entry.hook, rows=rows))
    # One time for the transaction, its newest caller's: all of it is accepted when it commits.
    message_store.insert_messages(conn, stored, max(entry.now for entry in batch), hooks)
    return outcomes


def _settle(entry: _Pending, outcome: Rows | Exception) -> None:
    """Wake the caller (unless it went away) with its stored rows or the error that refused them."""
    if entry.committed.done():
        return
    if isinstance(outcome, Exception):
        entry.committed.set_exception(outcome)
    else:
        entry.committed.set_result(outcome)
