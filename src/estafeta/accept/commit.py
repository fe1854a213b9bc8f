"""Group commit: the messages of concurrent callers are written in shared transactions.

What concurrent callers hand over while one transaction is being written goes into the next one, so many
sessions share one trip to the database thread and one fsync, and each caller still resumes only once the
transaction holding its messages has committed. Each caller's rows first pass its gate (the policy gate,
`estafeta.accept.gate`) inside that transaction.

On SQLite a transaction of a few small messages is written on the event loop's own thread
(`Database.writer_turn`): it then holds the database's one writer lock only as long as its work takes, and
the callers who come while another process holds the lock join it. Larger ones (an API request of many
messages, a large attachment) go to the database thread, so the loop never stops for long.

On PostgreSQL the transactions of other processes (front processes, nodes) are written at the same time:
the gate locks what it counts, account by account in id order, and a transaction the server aborts as a
deadlock's victim or for a serialisation conflict did nothing, so it is written again (`CONFLICT_TRIES`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection

from estafeta.accept.errors import AcceptError
from estafeta.store import messages as message_store
from estafeta.store.db import Database, DatabaseBusy, DatabaseConflict

Rows = list[message_store.NewMessage]
CONFLICT_TRIES = 3  # writes of a transaction PostgreSQL keeps aborting before its callers are told it is busy
INLINE_BYTES = 256 * 1024  # SQLite: most message text in a transaction written on the loop's thread
INLINE_RECIPIENTS = 64  # and queue entries


class Gate(Protocol):
    """Decides in the storing transaction, before anything is written, what of its callers' rows is stored."""

    def admit(self, conn: Connection, entries: list[tuple[Rows, datetime]]) -> list[Rows | AcceptError]:
        """For each caller's rows and time, in the order they came: the rows as they are to be stored (the
        policy gate moves suppressed recipients aside), or the `AcceptError` that refuses them."""
        ...


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

    def __init__(self, db: Database, stored: Callable[[], None] = lambda: None) -> None:
        """`stored` is told once per transaction that stored messages (it wakes delivery)."""
        self.db = db
        self.stored = stored
        self._pending: list[_Pending] = []
        self._taken: list[_Pending] = []  # the callers of the transaction being written
        self._writer: asyncio.Task[None] | None = None

    async def commit(
        self, rows: Rows, now: datetime, *, gate: Gate | None = None, hook: StoredHook | None = None
    ) -> Rows:
        """Return the rows as stored once they (and what `hook` writes) are committed; raise the gate's
        `AcceptError`, or what the database raised, if they were not stored."""
        entry = _Pending(rows, now, asyncio.get_running_loop().create_future(), gate, hook)
        self._pending.append(entry)
        if self._writer is None or self._writer.done():
            # A task of its own, so that a caller who goes away (a dropped connection) stops no one's commit.
            # One cancelled before it first ran never reached its `finally`: a new one takes what it left.
            self._writer = asyncio.create_task(self._write(), name="accept-commit")
        return await entry.committed

    async def _write(self) -> None:
        try:
            while self._pending:
                try:
                    outcomes = await self._take_and_store()
                except DatabaseBusy as exc:  # each alone would wait as long again
                    if not self._taken:  # the gate never came: everyone waiting for it waited as long
                        self._taken, self._pending = self._pending, []
                    for entry in self._taken:
                        _settle(entry, exc)
                    continue
                except Exception as exc:
                    if len(self._taken) == 1:
                        _settle(self._taken[0], exc)
                        continue
                    # One caller's rows must not fail the others': write each on its own.
                    for entry in self._taken:
                        await self._write_alone(entry)
                    continue
                for entry, outcome in zip(self._taken, outcomes, strict=True):
                    _settle(entry, outcome)
                if any(isinstance(outcome, list) and outcome for outcome in outcomes):
                    self.stored()
        finally:
            self._writer = None
            for entry in [*self._taken, *self._pending]:  # only when cancelled: nothing is left unanswered
                entry.committed.cancel()
            self._taken, self._pending = [], []

    async def _take_and_store(self) -> list[Rows | Exception]:
        """Take what is pending (into `_taken`) and store it. On a SQLite file it is taken only once this
        process holds the writer gate, so the callers who come while another process writes join this
        transaction instead of waiting for the next one; a short batch is then written there and then,
        on the event loop's thread, a larger one on the database thread."""
        self._taken = []
        if self.db.gated:
            async with self.db.writer_turn() as conn:
                self._taken, self._pending = self._pending, []
                if _short(self._taken):
                    return self.db.transaction(conn, store_batch, self._taken)
        else:
            self._taken, self._pending = self._pending, []
        return await self._store(self._taken)

    async def _write_alone(self, entry: _Pending) -> None:
        try:
            (outcome,) = await self._store([entry])
        except Exception as exc:
            outcome = exc
        _settle(entry, outcome)
        if isinstance(outcome, list) and outcome:
            self.stored()

    async def _store(self, batch: list[_Pending]) -> list[Rows | Exception]:
        """`store_batch` in a transaction, written again if PostgreSQL aborts it for a conflict with a
        concurrent one (it then did nothing, and its callers' rows are unchanged)."""
        run = self.db.run_inline if self.db.gated and _short(batch) else self.db.run
        for _ in range(CONFLICT_TRIES - 1):
            try:
                return await run(store_batch, batch)
            except DatabaseConflict:
                continue
        return await run(store_batch, batch)


def _short(batch: list[_Pending]) -> bool:
    """Whether the batch's transaction is quick enough to write on the event loop's thread."""
    rows = [row for entry in batch for row in entry.rows]
    return (
        sum(len(row.raw) for row in rows) <= INLINE_BYTES
        and sum(len(row.recipients) + len(row.suppressed) for row in rows) <= INLINE_RECIPIENTS
    )


def store_batch(conn: Connection, batch: list[_Pending]) -> list[Rows | Exception]:
    """One transaction for a batch: the entries pass their gate together (see `Gate.admit`) and the
    admitted rows are written together, their hooks run in account order."""
    outcomes: list[Rows | Exception] = [entry.rows for entry in batch]
    gates: dict[int, tuple[Gate, list[int]]] = {}
    for index, entry in enumerate(batch):
        if entry.gate is not None:
            gates.setdefault(id(entry.gate), (entry.gate, []))[1].append(index)
    for gate, indexes in gates.values():
        admitted = gate.admit(conn, [(batch[i].rows, batch[i].now) for i in indexes])
        for index, outcome in zip(indexes, admitted, strict=True):
            outcomes[index] = outcome
    stored: Rows = []
    hooks: list[message_store.StoreHook] = []
    by_account = sorted(range(len(batch)), key=lambda i: batch[i].rows[0].account_id if batch[i].rows else 0)
    for index in by_account:
        rows = outcomes[index]
        if isinstance(rows, Exception):
            continue
        stored.extend(rows)
        hook = batch[index].hook
        if hook is not None:
            hooks.append(functools.partial(hook, rows=rows))
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
