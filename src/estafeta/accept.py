"""Accepting mail: the policy gate, composition and signing, then one durable write.

Both ways in (HTTP API and SMTP relay) call this module, so the same rules hold for both, and a 202 or
250 is only answered after `insert_messages` has committed.

Commits are grouped: what concurrent callers hand over while one transaction is being written goes into
the next one, so many sessions share one trip to the database thread and one fsync, and each caller still
resumes only once the transaction holding its messages has committed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from estafeta.clock import Clock
from estafeta.compose import ComposeError, Draft, compose, ensure_headers, parse_address
from estafeta.config import Settings
from estafeta.dkim import DkimKey, DkimSigner
from estafeta.ids import new_message_id
from estafeta.store import accounts as account_store
from estafeta.store import messages as message_store
from estafeta.store.db import Database

_FEEDBACK_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class AcceptError(Exception):
    """A request the platform refuses; `field` names the offending input (e.g. `messages[2].from`)."""

    def __init__(self, field: str, reason: str, *, status: int = 422, smtp: str = "550 5.7.1") -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status
        self.smtp = smtp


@dataclass
class Submission:
    """One message as a caller asked for it."""

    draft: Draft
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Accepted:
    id: str
    message_id_header: str
    recipients: list[str]


@dataclass
class _Pending:
    rows: list[message_store.NewMessage]
    now: datetime
    committed: asyncio.Future[None]


class GroupCommit:
    """Writes the messages of concurrent callers in shared transactions (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None

    async def commit(self, rows: list[message_store.NewMessage], now: datetime) -> None:
        """Return once `rows` are committed; raise what the database raised if they could not be."""
        entry = _Pending(rows, now, asyncio.get_running_loop().create_future())
        self._pending.append(entry)
        if self._writer is None:
            # A task of its own, so that a caller who goes away (a dropped connection) stops no one's commit.
            self._writer = asyncio.create_task(self._write(), name="accept-commit")
        await entry.committed

    async def _write(self) -> None:
        batch: list[_Pending] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                # One time for the transaction, its newest caller's: all of it is accepted when it commits.
                rows = [row for entry in batch for row in entry.rows]
                try:
                    await self.db.run(message_store.insert_messages, rows, max(entry.now for entry in batch))
                except Exception as exc:
                    if len(batch) == 1:
                        _settle(batch[0], exc)
                        continue
                    # One caller's rows must not fail the others': write each on its own.
                    for entry in batch:
                        await self._write_alone(entry)
                    continue
                for entry in batch:
                    _settle(entry, None)
        finally:
            self._writer = None
            for entry in [*batch, *self._pending]:  # only when cancelled: nothing is left unanswered
                entry.committed.cancel()
            self._pending = []

    async def _write_alone(self, entry: _Pending) -> None:
        try:
            await self.db.run(message_store.insert_messages, entry.rows, entry.now)
        except Exception as exc:
            _settle(entry, exc)
            return
        _settle(entry, None)


def _settle(entry: _Pending, error: Exception | None) -> None:
    """Wake the caller (unless it went away) with success or the database's error."""
    if entry.committed.done():
        return
    if error is None:
        entry.committed.set_result(None)
    else:
        entry.committed.set_exception(error)


class Accepter:
    def __init__(self, db: Database, settings: Settings, clock: Clock, notify: Callable[[], None]) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.notify = notify
        self._commits = GroupCommit(db)
        self._signers: dict[str, tuple[int, DkimSigner]] = {}

    async def _signer(self, account_id: int, domain: str, field_name: str) -> DkimSigner:
        """The DKIM signer of a sending domain, which must belong to the account."""
        cached = self._signers.get(domain)
        if cached is None:
            row = await self.db.run(account_store.find_domain, domain)
            if row is not None:
                key = DkimKey(row.name, row.dkim_selector, row.dkim_algorithm, row.dkim_private_key)  # type: ignore[arg-type]
                cached = self._signers[domain] = (row.account_id, DkimSigner(key, clock=self.clock))
        if cached is None or cached[0] != account_id:
            raise AcceptError(
                field_name,
                f"sending domain {domain} is not registered to this account; add it with "
                "`estafeta domains add` and publish its DKIM record",
                status=403,
            )
        return cached[1]

    def _feedback_id(self, account_id: int, submission: Submission) -> str | None:
        if submission.draft.stream != "broadcast":
            return None
        # Feedback-ID fields are colon-separated tokens: keep the tag's safe characters only
        campaign = _FEEDBACK_UNSAFE.sub("-", submission.tags[0])[:64] if submission.tags else "default"
        return f"{campaign}:{account_id}:{submission.draft.stream}:{self.settings.feedback_id_sender}"

    async def accept(
        self, account_id: int, submissions: list[Submission], *, source: str = "api", prefix: str = "messages"
    ) -> list[Accepted]:
        """Compose, sign and durably queue every submission, or none of them.

        Errors name fields as `<prefix>[<index>].<field>`, or just `<field>` when `prefix` is empty.
        """
        now = self.clock.now()
        rows: list[message_store.NewMessage] = []
        for index, sub in enumerate(submissions):
            where = f"{prefix}[{index}]" if prefix else ""
            signer = await self._signer(account_id, sub.draft.from_.domain, _join(where, "from"))
            message_id = new_message_id()
            try:
                composed = compose(
                    sub.draft, message_id=message_id, now=now, feedback_id=self._feedback_id(account_id, sub)
                )
            except ComposeError as exc:
                raise AcceptError(_join(where, exc.field), exc.reason, smtp="550 5.6.0") from exc
            rows.append(
                message_store.NewMessage(
                    id=message_id,
                    account_id=account_id,
                    stream=sub.draft.stream,
                    source=source,
                    from_address=sub.draft.from_.email,
                    subject=sub.draft.subject,
                    message_id_header=composed.message_id_header,
                    raw=signer.sign(composed.raw),
                    smtputf8=composed.smtputf8,
                    recipients=[r.email for r in composed.recipients],
                    tags=sub.tags,
                    meta=sub.metadata,
                )
            )
        await self._commits.commit(rows, now)
        self.notify()
        return [Accepted(r.id, r.message_id_header, r.recipients) for r in rows]

    async def accept_raw(
        self,
        account_id: int,
        mail_from: str,
        recipients: list[str],
        raw: bytes,
        *,
        stream: str = "transactional",
    ) -> Accepted:
        """Queue a message that arrived already composed (SMTP relay): only Message-ID/Date may be added."""
        now = self.clock.now()
        try:
            sender = parse_address(mail_from)
        except ValueError as exc:
            raise AcceptError("mail_from", str(exc), smtp="553 5.1.7") from exc
        signer = await self._signer(account_id, sender.domain, "mail_from")
        message_id = new_message_id()
        try:
            raw, message_id_header = ensure_headers(
                raw, message_id=message_id, sending_domain=sender.domain, now=now
            )
        except ComposeError as exc:
            raise AcceptError(exc.field, exc.reason, smtp="550 5.6.0") from exc
        row = message_store.NewMessage(
            id=message_id,
            account_id=account_id,
            stream=stream,
            source="smtp",
            from_address=sender.email,
            subject="",
            message_id_header=message_id_header,
            raw=signer.sign(raw),
            smtputf8=sender.smtputf8 or any(not r.isascii() for r in recipients),
            recipients=recipients,
        )
        await self._commits.commit([row], now)
        self.notify()
        return Accepted(row.id, message_id_header, recipients)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
