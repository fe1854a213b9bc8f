"""Accepting mail: composition, linting, link checks and signing, then the policy gate and one durable write.

Both ways in (HTTP API and SMTP relay) call `Accepter`, so the same rules hold for both, and a 202 or 250
is only answered after `insert_messages` has committed (`estafeta.accept.commit`). The policy gate
(`estafeta.accept.gate`) runs inside that transaction.

Links are checked (`estafeta.compliance.links`): a message with a suspicious link is accepted but held
(state `held`) and its account flagged for review. Every message is linted against the sender guidelines
(`estafeta.compliance.linter`): with `lint.mode` `warn` the findings travel with the accepted message
(event data and the answer), with `block` a message with an error is refused and every finding is listed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from estafeta.accept.commit import GroupCommit, Rows
from estafeta.accept.errors import AcceptError
from estafeta.accept.gate import PolicyGate
from estafeta.clock import Clock
from estafeta.compliance.links import LinkChecker, extract_links
from estafeta.compliance.linter import Finding, LintContext, lint_composed, lint_raw, message_bodies
from estafeta.compose import ComposedMessage, ComposeError, Draft, compose, ensure_headers, parse_address
from estafeta.compose.relayed import rewrite_relayed_html
from estafeta.config import Settings
from estafeta.dkim_keys import SIGNER_REFRESH, DomainSigner, domain_signer
from estafeta.ids import new_message_id
from estafeta.metrics import Metrics
from estafeta.plans import Meter
from estafeta.store import accounts as account_store
from estafeta.store import messages as message_store
from estafeta.store.db import Database
from estafeta.streams import Streams
from estafeta.tracking import Tracker, TrackingOverride

_FEEDBACK_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
INLINE_PREPARE_BYTES = 64 * 1024  # a relayed message up to this size is signed on the event loop


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


@dataclass(frozen=True)
class _Job:
    """One submission ready to compose on a worker thread."""

    submission: Submission
    where: str  # how errors name it
    message_id: str
    feedback_id: str | None
    rewrite: Callable[[str, str | None], str] | None  # open and click tracking
    context: LintContext
    signer: DomainSigner


class Accepter:
    """Turns submissions into signed, stored messages; see the module docstring for what it checks."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        *,
        streams: Streams,
        notify: Callable[[], None] = lambda: None,
        tracker: Tracker | None = None,
        metrics: Metrics | None = None,
        own_hosts: Callable[[], set[str]] | None = None,
        meter: Meter | None = None,
        sending_refusal: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> None:
        """`notify` is told when mail became due (it wakes delivery); `own_hosts` names the platform's own
        hosts (public pages, tracking), whose links are trusted; `meter` counts usage against plans;
        `sending_refusal` says why a registered domain may not send (not verified), or None."""
        self.db = db
        self.tracker = tracker
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self.streams = streams
        self.gate = PolicyGate(settings, meter)
        self._commits = GroupCommit(db, stored=notify)
        self._signers: dict[str, DomainSigner] = {}
        self.links = LinkChecker(settings.links, own_hosts)
        self.sending_refusal = sending_refusal

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

    async def domain_refusal(self, domain: str) -> str | None:
        """Why the registered sending domain may not send now (not verified), or None."""
        return await self.sending_refusal(domain) if self.sending_refusal else None

    async def _signer(self, account_id: int, domain: str, field_name: str) -> DomainSigner:
        """The DKIM signer of a sending domain, which must belong to the account and be verified (reloaded
        every `SIGNER_REFRESH`, so rotated keys take over)."""
        cached = self._signers.get(domain)
        if cached is None or self.clock.now() >= cached.loaded_at + SIGNER_REFRESH:
            row = await self.db.run(account_store.find_domain, domain)
            cached = None
            if row is not None:
                cached = self._signers[domain] = domain_signer(row, self.clock)
        if cached is None or cached.account_id != account_id:
            raise AcceptError(
                field_name,
                f"sending domain {domain} is not registered to this account; add it with "
                "`estafeta domains add` and publish its DKIM record",
                status=403,
            )
        refusal = await self.domain_refusal(domain)
        if refusal is not None:
            raise AcceptError(field_name, refusal, status=403, smtp="550 5.7.1", kind="domain-not-verified")
        if not cached.signers:
            raise AcceptError(
                field_name,
                f"sending domain {domain} has no DKIM key in DNS yet; publish its record",
                status=403,
                smtp="550 5.7.1",
            )
        return cached

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
        jobs: list[_Job] = []
        refused: AcceptError | None = None  # the first refusal before composing, raised in its turn
        for index, sub in enumerate(submissions):
            where = f"{prefix}[{index}]" if prefix else ""
            try:
                jobs.append(await self._job(account_id, sub, where))
            except AcceptError as exc:
                refused = exc
                break
        # Composing, linting and signing are CPU work: off the event loop, so that one large request
        # holds up no one else's, in one trip to a worker thread for the whole request.
        built = await asyncio.to_thread(self._build_all, jobs, now, refused)
        rows: list[message_store.NewMessage] = []
        findings: list[tuple[str, Finding]] = []
        per_message: list[list[Finding]] = []
        for job, (composed, found, signed) in zip(jobs, built, strict=True):
            sub, signer = job.submission, job.signer
            findings.extend((_join(job.where, f.field), f) for f in found)
            per_message.append(found)
            held = await self.links.check(sub.draft.html, sub.draft.text)
            rows.append(
                message_store.NewMessage(
                    id=job.message_id,
                    account_id=account_id,
                    stream=sub.draft.stream,
                    source=source,
                    from_address=sub.draft.from_.email,
                    subject=sub.draft.subject,
                    message_id_header=composed.message_id_header,
                    raw=signed,
                    dkim_keys=signer.key_ids,
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
            self.gate.flag_held(conn, rows, now)
            if on_commit is not None:
                on_commit(conn, _accepted(rows, per_message))

        rows = await self._commits.commit(rows, now, gate=self.gate, hook=hook)
        self._count(source, rows)
        return _accepted(rows, per_message)

    def _check_size(self, where: str, size: int) -> None:
        limit = self.settings.api.max_message_bytes
        if size > limit:
            raise AcceptError(
                where or "message",
                f"the message is {size} bytes or more; at most {limit} are accepted (api.max_message_bytes)",
                status=413,
                smtp="552 5.3.4",
                kind="message-too-large",
            )

    async def _job(self, account_id: int, sub: Submission, where: str) -> _Job:
        """What composing one submission needs from the event loop: its signer, tracking and lint context."""
        self._check_size(where, _content_size(sub.draft))  # before composing what is too large anyway
        signer = await self._signer(account_id, sub.draft.from_.domain, _join(where, "from"))
        message_id = new_message_id()
        rewrite = None
        if self.tracker is not None:
            choice = await self.tracker.choice(account_id, sub.draft.stream, sub.tracking)
            rewrite = self.tracker.rewriter(message_id, choice)
        context = LintContext(
            stream=sub.draft.stream,
            authenticated_domain=sub.draft.from_.domain,
            envelope_from=f"bounces@{self.settings.return_path_domain}",
            category_from_domain=await self.streams.from_domain(account_id, sub.draft.stream),
        )
        return _Job(sub, where, message_id, self._feedback_id(account_id, sub), rewrite, context, signer)

    def _build_all(
        self, jobs: list[_Job], now: datetime, refused: AcceptError | None
    ) -> list[tuple[ComposedMessage, list[Finding], bytes]]:
        """Build every job in order (on a worker thread), then raise `refused`: a request's first error is
        the one answered, whether composing or the checks before it found it."""
        built = [self._build(job, now) for job in jobs]
        if refused is not None:
            raise refused
        return built

    def _build(self, job: _Job, now: datetime) -> tuple[ComposedMessage, list[Finding], bytes]:
        """Compose, check the size, lint and sign one message (on a worker thread)."""
        sub, where, rewrite = job.submission, job.where, job.rewrite
        try:
            composed = compose(
                sub.draft,
                message_id=job.message_id,
                now=now,
                feedback_id=job.feedback_id,
                rewrite_html=rewrite,
            )
        except ComposeError as exc:
            raise AcceptError(_join(where, exc.field), exc.reason, smtp="550 5.6.0") from exc
        self._check_size(where, len(composed.raw))
        found = lint_composed(composed.raw, sub.draft.html, sub.draft.text, job.context)
        return composed, found, job.signer.sign(composed.raw)

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
        context = LintContext(
            stream=stream,  # type: ignore[arg-type]
            authenticated_domain=sender.domain,
            envelope_from=sender.email,
            category_from_domain=await self.streams.from_domain(account_id, stream),
        )
        tracked: Callable[[str, str | None], str] | None = None
        if self.tracker is not None:
            tracked = self.tracker.rewriter(message_id, await self.tracker.choice(account_id, stream, None))
        sole = recipients[0] if len(recipients) == 1 else None  # else tracked per message

        def prepare() -> tuple[bytes, str, list[str], list[Finding]]:
            """Check, lint, find the links of and track the message: CPU work, done in one go."""
            checked, message_id_header, bodies, found = _check_relayed(
                raw, message_id, sender.domain, now, context
            )
            self._lint_outcome([(f.field, f) for f in found])
            if tracked is not None:
                track = tracked
                checked = rewrite_relayed_html(checked, lambda markup: track(markup, sole))
            # The links as the sender wrote them: tracking hides where links go.
            links = extract_links(*bodies) if self.links.settings.enabled else []
            return checked, message_id_header, links, found

        def prepare_and_sign() -> tuple[bytes, str, list[str], list[Finding]]:
            checked, message_id_header, links, found = prepare()
            return signer.sign(checked), message_id_header, links, found

        # A message of the usual size is prepared right here: the work is Python, holding the GIL, so a
        # worker thread ran little of it alongside the event loop, while the trip there and back (and the GIL
        # handed over twice) cost more than the loop now waits. Only its RSA signature, which OpenSSL
        # computes without the GIL, is made on a signing thread meanwhile. A large message goes off the loop
        # whole, so that it holds up no other session for long.
        if len(raw) <= INLINE_PREPARE_BYTES:
            checked, message_id_header, links, found = prepare()
            signed = await signer.sign_async(checked)
        else:
            signed, message_id_header, links, found = await asyncio.to_thread(prepare_and_sign)
        held = await self.links.check_links(links)
        row = message_store.NewMessage(
            id=message_id,
            account_id=account_id,
            stream=stream,
            source="smtp",
            from_address=sender.email,
            subject="",
            message_id_header=message_id_header,
            raw=signed,
            dkim_keys=signer.key_ids,
            smtputf8=sender.smtputf8 or any(not r.isascii() for r in recipients),
            recipients=recipients,
            lint=[f.as_dict() for f in found],
            held=held,
        )
        (row,) = await self._commits.commit(
            [row], now, gate=self.gate, hook=lambda conn, rows: self.gate.flag_held(conn, rows, now)
        )
        self._count("smtp", [row])
        return Accepted(row.id, message_id_header, row.recipients, row.suppressed, found, row.held)


def _accepted(rows: Rows, findings: list[list[Finding]]) -> list[Accepted]:
    return [
        Accepted(r.id, r.message_id_header, r.recipients, r.suppressed, found, r.held)
        for r, found in zip(rows, findings, strict=True)
    ]


def _check_relayed(
    raw: bytes, message_id: str, sending_domain: str, now: datetime, context: LintContext
) -> tuple[bytes, str, tuple[str | None, str | None], list[Finding]]:
    """A relayed message with Message-ID/Date added when missing, its bodies and lint findings, linted and
    (by the caller) link-checked as the sender wrote it: tracking would hide where links go."""
    try:
        raw, message_id_header = ensure_headers(
            raw, message_id=message_id, sending_domain=sending_domain, now=now
        )
    except ComposeError as exc:
        raise AcceptError(exc.field, exc.reason, smtp="550 5.6.0") from exc
    bodies = message_bodies(raw)
    found = lint_raw(raw, context, checked=True, bodies=bodies)  # ensure_headers checked its structure
    return raw, message_id_header, bodies, found


def _content_size(draft: Draft) -> int:
    """What the message will at least weigh once composed: its bodies and attachments, before encoding."""
    return len(draft.text or "") + len(draft.html or "") + sum(len(a.content) for a in draft.attachments)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
