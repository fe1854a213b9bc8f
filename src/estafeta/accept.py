"""Accepting mail: the policy gate, composition and signing, then one durable write.

Both ways in (HTTP API and SMTP relay) call this module, so the same rules hold for both, and a 202 or
250 is only answered after `insert_messages` has committed.

The policy gate drops suppressed recipients (account or global list, spam traps) before they are queued:
the message is still recorded, and each dropped recipient gets a `suppressed` event with the reason.

The gate also holds reputation (`estafeta.reputation`): mail for a paused or suspended stream is
refused (HTTP 403 `/problems/account-paused`; SMTP `451 4.7.1` while paused pending review, `550 5.7.1`
when suspended), and so is mail over the account's warm-up limit (HTTP 429 `/problems/sending-limit`,
SMTP `452 4.5.3`). The gate runs inside the transaction that stores the messages, after what that
transaction already queued, so concurrent requests can never overshoot a limit together (on PostgreSQL a
limited account's row is locked for the transaction). Links are checked (`estafeta.compliance.links`): a
message with a suspicious link is accepted but held (state `held`) and its account flagged for review.

Every message is linted against the sender guidelines (`estafeta.compliance.linter`): with `lint.mode`
`warn` the findings travel with the accepted message (event data and the answer), with `block` a message
with an error is refused and every finding is listed.

Commits are grouped: what concurrent callers hand over while one transaction is being written goes into
the next one, so many sessions share one trip to the database thread and one fsync, and each caller still
resumes only once the transaction holding its messages has committed.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from estafeta.clock import Clock
from estafeta.compliance.links import LinkChecker
from estafeta.compliance.linter import Finding, LintContext, lint_composed, lint_raw, message_bodies
from estafeta.compose import ComposeError, Draft, compose, ensure_headers, parse_address
from estafeta.compose.relayed import rewrite_relayed_html
from estafeta.config import Settings
from estafeta.dkim import DkimKey, DkimSigner
from estafeta.ids import new_message_id
from estafeta.metrics import Metrics
from estafeta.reputation import DAY, HOW_TO_RESUME, flag_for_review, sending_limit
from estafeta.store import accounts as account_store
from estafeta.store import messages as message_store
from estafeta.store import reputation as reputation_store
from estafeta.store import streams as stream_store
from estafeta.store.db import Database
from estafeta.suppression import SpamTraps, screen
from estafeta.tracking import Tracker, TrackingOverride

_FEEDBACK_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class AcceptError(Exception):
    """A request the platform refuses; `field` names the offending input (e.g. `messages[2].from`).

    `errors` lists every problem as `{field, reason}` when there are several (lint findings).
    """

    def __init__(
        self,
        field: str,
        reason: str,
        *,
        status: int = 422,
        smtp: str = "550 5.7.1",
        errors: list[dict[str, str]] | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status
        self.smtp = smtp
        self.errors = errors or [{"field": field, "reason": reason}]
        self.kind = kind  # the problem type's last segment, e.g. `account-paused`


@dataclass
class Submission:
    """One message as a caller asked for it."""

    draft: Draft
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    tracking: TrackingOverride | None = None


@dataclass(frozen=True)
class Accepted:
    id: str
    message_id_header: str
    recipients: list[str]  # queued
    suppressed: list[message_store.Suppressed] = field(default_factory=list)
    lint: list[Finding] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # why the recipients wait for an administrator


Rows = list[message_store.NewMessage]
Gate = Callable[[Connection, Rows, datetime, dict[int, "AccountView"]], Rows]
"""Runs in the storing transaction before rows are written: returns them as they are to be stored (the
policy gate moves suppressed recipients aside) or raises `AcceptError` to refuse them, and nothing of
them is written."""
StoredHook = Callable[[Connection, Rows], None]
"""Store work committed with the messages, in their transaction, given the rows as stored."""


@dataclass
class AccountView:
    """An account's standing and warm-up usage as one storing transaction sees them, counting what the
    transaction itself has queued so far."""

    standings: dict[str, reputation_store.Standing]
    limit: int | None
    used: int


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
    views: dict[int, AccountView] = {}
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


class Accepter:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        notify: Callable[[], None],
        *,
        tracker: Tracker | None = None,
        metrics: Metrics | None = None,
        own_hosts: Callable[[], set[str]] | None = None,
    ) -> None:
        """`own_hosts` names the platform's own hosts (public pages, tracking), whose links are trusted."""
        self.db = db
        self.tracker = tracker
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self.notify = notify
        self._commits = GroupCommit(db)
        self._signers: dict[str, tuple[int, DkimSigner]] = {}
        self._traps = SpamTraps(settings.suppression.spam_traps)
        self._streams: dict[int, dict[str, stream_store.StreamRow]] = {}
        self.links = LinkChecker(settings.links, own_hosts)

    def streams_changed(self, account_id: int) -> None:
        """Forget the account's cached stream settings (its From domains are read again)."""
        self._streams.pop(account_id, None)

    async def _category_domain(self, account_id: int, stream: str) -> str | None:
        """The From domain the account set for a stream, if it set one."""
        streams = self._streams.get(account_id)
        if streams is None:
            streams = self._streams[account_id] = await self.db.run(stream_store.for_account, account_id)
        row = streams.get(stream)
        return row.from_domain if row is not None and row.from_domain else None

    def _lint_outcome(self, findings: list[tuple[str, Finding]]) -> None:
        """In `block` mode, refuse when any finding is an error, listing every finding."""
        if self.settings.lint.mode != "block" or not any(f.severity == "error" for _, f in findings):
            return
        errors = [
            {"field": where, "reason": f"[{f.rule}] {f.message}", "rule": f.rule, "severity": f.severity}
            for where, f in findings
        ]
        first = next((where, f) for where, f in findings if f.severity == "error")
        count = sum(1 for _, f in findings if f.severity == "error")
        raise AcceptError(
            first[0],
            f"[{first[1].rule}] {first[1].message}" + (f" (and {count - 1} more)" if count > 1 else ""),
            smtp="550 5.7.1",
            errors=errors,
        )

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

    def _gate(self, conn: Connection, rows: Rows, now: datetime, views: dict[int, AccountView]) -> Rows:
        """The policy gate and the account's standing, in the storing transaction (module docstring)."""
        if not rows:
            return rows
        account_id = rows[0].account_id
        view = views.get(account_id)
        if view is None:
            view = views[account_id] = self._account_view(conn, account_id, now)
        rows = self._screen(conn, account_id, rows)
        for stream in dict.fromkeys(r.stream for r in rows):
            standing = view.standings[stream]
            if standing.state == "suspended":
                raise AcceptError(
                    "stream",
                    f"the account's {stream} sending is suspended after review ({standing.reason}); "
                    "contact the platform's administrators",
                    status=403,
                    smtp="550 5.7.1",
                    kind="account-paused",
                )
            if standing.state == "paused":
                raise AcceptError(
                    "stream",
                    f"the account's {stream} sending is paused ({standing.reason}); queued mail waits and "
                    f"may be cancelled; to resume, {HOW_TO_RESUME}",
                    status=403,
                    smtp="451 4.7.1",
                    kind="account-paused",
                )
        wanted = sum(len(r.recipients) for r in rows if not r.held)
        if view.limit is not None and wanted and view.used + wanted > view.limit:
            raise AcceptError(
                "recipients",
                f"the account may send to {view.limit} recipients per 24 hours during warm-up and has used "
                f"{view.used}; these {wanted} would exceed it. The limit rises after an automatic review "
                f"once {self.settings.warmup.review_at:.0%} of it is used with healthy bounce and complaint "
                "rates",
                status=429,
                smtp="452 4.5.3",
                kind="sending-limit",
            )
        view.used += wanted
        return rows

    def _account_view(self, conn: Connection, account_id: int, now: datetime) -> AccountView:
        limit = sending_limit(reputation_store.tier(conn, account_id), self.settings)
        used = 0
        if limit is not None:
            # Serialises a limited account's storing transactions (PostgreSQL; SQLite has one writer), so
            # two of them never both count the same headroom.
            reputation_store.lock_account(conn, account_id)
            limit = sending_limit(reputation_store.tier(conn, account_id), self.settings)
            used = reputation_store.usage(conn, account_id, now - DAY)
        return AccountView(reputation_store.standings(conn, account_id), limit, used)

    def _screen(self, conn: Connection, account_id: int, rows: Rows) -> Rows:
        """Suppressed recipients move from `recipients` to `suppressed` (one query per stream: an
        `unsubscribe` entry holds for broadcast mail only)."""
        screened = list(rows)
        for broadcast in (False, True):
            indexes = [i for i, row in enumerate(rows) if (row.stream == "broadcast") == broadcast]
            if not indexes:
                continue
            recipients = [r for i in indexes for r in rows[i].recipients]
            found = screen(conn, account_id, recipients, self._traps, broadcast=broadcast)
            if not found:
                continue
            for i in indexes:
                screened[i] = replace(
                    rows[i],
                    recipients=[r for r in rows[i].recipients if r not in found],
                    suppressed=[found[r] for r in rows[i].recipients if r in found],
                )
        return screened

    def _flag_held(self, conn: Connection, rows: list[message_store.NewMessage], now: datetime) -> None:
        """Open (or extend) a review for the account of each held message, in the messages' transaction."""
        for row in rows:
            if row.held:
                reason = f"message {row.id} held: " + "; ".join(row.held)
                flag_for_review(conn, row.account_id, row.stream, reason, now)

    def _feedback_id(self, account_id: int, submission: Submission) -> str | None:
        if submission.draft.stream != "broadcast":
            return None
        # Feedback-ID fields are colon-separated tokens: keep the tag's safe characters only
        campaign = _FEEDBACK_UNSAFE.sub("-", submission.tags[0])[:64] if submission.tags else "default"
        return f"{campaign}:{account_id}:{submission.draft.stream}:{self.settings.feedback_id_sender}"

    async def accept(
        self,
        account_id: int,
        submissions: list[Submission],
        *,
        source: str = "api",
        prefix: str = "messages",
        on_commit: Callable[[Connection, list[Accepted]], None] | None = None,
    ) -> list[Accepted]:
        """Compose, sign and durably queue every submission, or none of them.

        Errors name fields as `<prefix>[<index>].<field>`, or just `<field>` when `prefix` is empty.
        `on_commit` is called with what was accepted inside the transaction that stores it.
        """
        now = self.clock.now()
        rows: list[message_store.NewMessage] = []
        findings: list[tuple[str, Finding]] = []
        per_message: list[list[Finding]] = []
        for index, sub in enumerate(submissions):
            where = f"{prefix}[{index}]" if prefix else ""
            signer = await self._signer(account_id, sub.draft.from_.domain, _join(where, "from"))
            message_id = new_message_id()
            rewrite = None
            if self.tracker is not None:
                choice = await self.tracker.choice(account_id, sub.draft.stream, sub.tracking)
                rewrite = self.tracker.rewriter(message_id, choice)
            try:
                composed = compose(
                    sub.draft,
                    message_id=message_id,
                    now=now,
                    feedback_id=self._feedback_id(account_id, sub),
                    rewrite_html=rewrite,
                )
            except ComposeError as exc:
                raise AcceptError(_join(where, exc.field), exc.reason, smtp="550 5.6.0") from exc
            context = LintContext(
                stream=sub.draft.stream,
                authenticated_domain=sub.draft.from_.domain,
                envelope_from=f"bounces@{self.settings.return_path_domain}",
                category_from_domain=await self._category_domain(account_id, sub.draft.stream),
            )
            found = lint_composed(composed.raw, sub.draft.html, sub.draft.text, context)
            findings.extend((_join(where, f.field), f) for f in found)
            per_message.append(found)
            held = await self.links.check(sub.draft.html, sub.draft.text)
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
                    lint=[f.as_dict() for f in found],
                    held=held,
                )
            )
        self._lint_outcome(findings)

        def hook(conn: Connection, rows: Rows) -> None:
            self._flag_held(conn, rows, now)
            if on_commit is not None:
                on_commit(conn, _accepted(rows, per_message))

        rows = await self._commits.commit(rows, now, gate=self._gate, hook=hook)
        self.notify()
        self._count(source, rows)
        return _accepted(rows, per_message)

    def _count(self, source: str, rows: list[message_store.NewMessage]) -> None:
        if self.metrics is not None:
            self.metrics.accepted_messages.labels(source).inc(len(rows))
            self.metrics.accepted_recipients.labels(source).inc(sum(len(r.recipients) for r in rows))

    async def accept_raw(
        self,
        account_id: int,
        mail_from: str,
        recipients: list[str],
        raw: bytes,
        *,
        stream: str = "transactional",
    ) -> Accepted:
        """Queue a message that arrived already composed (SMTP relay): Message-ID/Date are added when
        missing, and its HTML is rewritten for open/click tracking when the stream is tracked (unless the
        message carries a DKIM signature of its own); everything else keeps its bytes."""
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
        context = LintContext(
            stream=stream,  # type: ignore[arg-type]
            authenticated_domain=sender.domain,
            envelope_from=sender.email,
            category_from_domain=await self._category_domain(account_id, stream),
        )
        # Linted and link-checked as the sender wrote it (tracking would hide where links go).
        bodies = message_bodies(raw)
        found = lint_raw(raw, context, checked=True, bodies=bodies)  # ensure_headers checked its structure
        self._lint_outcome([(f.field, f) for f in found])
        held = await self.links.check(*bodies)
        if self.tracker is not None:
            choice = await self.tracker.choice(account_id, stream, None)
            rewrite = self.tracker.rewriter(message_id, choice)
            if rewrite is not None:
                sole = recipients[0] if len(recipients) == 1 else None  # else tracked per message
                # Off the event loop: parsing a large message takes a while.
                raw = await asyncio.to_thread(rewrite_relayed_html, raw, lambda markup: rewrite(markup, sole))
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
            lint=[f.as_dict() for f in found],
            held=held,
        )
        (row,) = await self._commits.commit(
            [row], now, gate=self._gate, hook=lambda conn, rows: self._flag_held(conn, rows, now)
        )
        self.notify()
        self._count("smtp", [row])
        return Accepted(row.id, message_id_header, row.recipients, row.suppressed, found, row.held)


def _accepted(rows: Rows, findings: list[list[Finding]]) -> list[Accepted]:
    return [
        Accepted(r.id, r.message_id_header, r.recipients, r.suppressed, found, r.held)
        for r, found in zip(rows, findings, strict=True)
    ]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
