"""The abuse desk: what people mail to `abuse@` and `postmaster@` the platform's domains.

Every such message is kept (`abuse_reports`, the raw message up to `inbound.abuse_keep_bytes`) and matched
to the account that sent what it reports, by the traces our mail carries (`estafeta.bounces.abuse`):

* **verified** traces — the VERP return path (its HMAC), a Message-ID found in the message store, a signed
  tracking link — name the message, and usually the recipient. Such a report counts in the account's
  reputation (`abuse_reported`, weighted as `reputation.abuse_report_weight` complaints), suppresses the
  reported recipient on the account's list, and opens or extends a review with the report as evidence;
  a report in one of `reputation.abuse_pause_categories` (phishing, malware) pauses all sending at once.
* **claimed** traces — a Feedback-ID or a DKIM d= domain, which anyone can write — attach the report to
  the account and open a review for an operator to judge, without counting or pausing anything.

A report nothing matches waits in the operators' inbox (`GET /v1/admin/abuse?matched=false`). A
feedback-loop report (ARF) mailed to these addresses is a complaint, recorded by the inbound listener like
any other; it is kept here too, for the record, and not counted twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import Connection

from estafeta import verp
from estafeta.bounces.abuse import CATEGORIES, HumanReport, feedback_account, read_report
from estafeta.bounces.engine import Classification
from estafeta.bounces.reasons import Reason
from estafeta.clock import Clock
from estafeta.config import Settings
from estafeta.store import abuse as store
from estafeta.store import events, feedback
from estafeta.store.db import Database
from estafeta.store.events import NewEvent
from estafeta.suppression import for_complaint
from estafeta.tracking import TokenSigner

VERIFIED = ("verp", "message-id", "tracking")
ReportRow = store.ReportRow

AfterReport = Callable[[Connection, store.ReportRow, bool, datetime], int | None]
"""Runs in the report's transaction: counts it (when `verified`) and opens or extends a review; returns the
review id, if any."""


@dataclass(frozen=True)
class Match:
    """What a report was matched to, and by which trace."""

    account_id: int
    matched_by: str
    message_id: str | None = None
    recipient: str | None = None
    delivery_id: int | None = None

    @property
    def verified(self) -> bool:
        return self.matched_by in VERIFIED


class AbuseDesk:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        verp_secret: bytes,
        tokens: TokenSigner,
        after_report: AfterReport,
    ) -> None:
        """`tokens` reads the tracking links of quoted mail; `after_report` is reputation's reaction."""
        self.db = db
        self.settings = settings
        self.clock = clock
        self.verp_secret = verp_secret
        self.tokens = tokens
        self.after_report = after_report

    def domains(self) -> set[str]:
        """The platform's own domains, whose abuse@ and postmaster@ the inbound listener receives."""
        return platform_domains(self.settings)

    async def ingest(self, mailbox: str, raw: bytes, found: Classification) -> str:
        """Keep one message sent to an abuse address and act on it; returns what it was taken for."""
        human = read_report(raw)
        now = self.clock.now()
        keep = raw[: self.settings.inbound.abuse_keep_bytes]

        def work(conn: Connection) -> str:
            match = self._match(conn, human)
            category = _category(found, human)
            new = store.NewReport(
                mailbox=mailbox[:320],
                reporter=(human.reporter or "")[:320] or None,
                subject=human.subject,
                category=category,
                account_id=match.account_id if match else None,
                message_id=match.message_id if match else None,
                recipient=match.recipient if match else None,
                matched_by=match.matched_by if match else "",
                excerpt=human.excerpt,
                size=len(raw),
                raw=keep,
            )
            row = store.add_report(conn, new, now)
            if match is None or category not in CATEGORIES:
                return "unmatched" if match is None else category
            if match.verified:
                _count(conn, row, match, now)
            review_id = self.after_report(conn, row, match.verified, now)
            if review_id is not None:
                store.set_review(conn, row.id, review_id)
            return f"matched by {match.matched_by}"

        return await self.db.run(work)

    def _match(self, conn: Connection, human: HumanReport) -> Match | None:
        """The first trace that names a message or account we know, verified traces first."""
        found = human.traces
        for token in found.verp_tokens:
            delivery_id = verp.parse_token(token, self.verp_secret)
            target = feedback.delivery_target(conn, delivery_id) if delivery_id is not None else None
            if target is not None:
                return Match(
                    target.account_id, "verp", target.message_id, target.recipient, target.delivery_id
                )
        for header in found.message_ids:
            targets = feedback.message_targets(conn, header)
            if len({t.account_id for t in targets}) == 1:
                one = targets[0] if len(targets) == 1 else None
                return Match(
                    targets[0].account_id,
                    "message-id",
                    targets[0].message_id,
                    one.recipient if one else None,
                    one.delivery_id if one else None,
                )
        for kind, token in found.tracking_tokens:
            hit = self.tokens.read(token, "open" if kind == "open" else "click")
            account = store.message_account(conn, hit.message_id) if hit is not None else None
            if hit is not None and account is not None:
                return Match(account, "tracking", hit.message_id, hit.recipient)
        sender = self.settings.feedback_id_sender
        for value in found.feedback_ids:
            account = feedback_account(value) if value.endswith(f":{sender}") else None
            if account is not None and store.account_exists(conn, account):
                return Match(account, "feedback-id")
        for domain in found.dkim_domains:
            account = store.domain_account(conn, domain)
            if account is not None:
                return Match(account, "dkim")
        return None

    async def reports(
        self,
        *,
        matched: bool | None = None,
        account_id: int | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[store.ReportRow]:
        """Reports newest first; `matched=False` is the operators' inbox."""
        return await self.db.run(
            store.list_reports, matched=matched, account_id=account_id, before_id=before_id, limit=limit
        )

    async def report(self, report_id: int) -> tuple[store.ReportRow, bytes] | None:
        """A report and the message as kept."""
        return await self.db.run(store.get_report, report_id)


def _category(found: Classification, human: HumanReport) -> str:
    """A person's report gets the category of their words; mail that is no person's report is kept under
    what it is and acts on nothing here."""
    if found.complaint is not None:
        return "complaint"  # the inbound listener counted it as a complaint already
    if found.source in ("arf", "hotmail", "ses"):
        return "feedback"  # a feedback report that is no complaint (auth-failure, not-spam)
    if found.report is not None and found.report.is_bounce:
        return "bounce"
    if found.report is not None and found.report.reason is Reason.OUT_OF_OFFICE:
        return "auto-reply"
    return human.category


def _count(conn: Connection, row: store.ReportRow, match: Match, now: datetime) -> None:
    """One `abuse_reported` event, on the reported delivery (whose recipient is then suppressed on the
    account's list) or else on the message or the account."""
    data = {
        "report_id": row.id,
        "category": row.category,
        "matched_by": row.matched_by,
        "reporter": row.reporter,
        "excerpt": row.excerpt[:300],
    }
    target = feedback.delivery_target(conn, match.delivery_id) if match.delivery_id is not None else None
    if target is not None:
        entries = for_complaint(
            target.account_id, target.recipient, f"abuse report {row.id} ({row.category})"
        )
        feedback.record(conn, target, event="abuse_reported", data=data, now=now, entries=entries)
        return
    new = NewEvent(match.account_id, "abuse_reported", data, match.message_id, match.recipient)
    events.record(conn, [new], now)


def platform_domains(settings: Settings) -> set[str]:
    """The return-path domain, the tracking domain and `inbound.platform_domains`, lower case."""
    found = {settings.return_path_domain, *settings.inbound.platform_domains}
    if settings.tracking.base_url:
        found.add(urlsplit(settings.tracking.base_url).hostname or "")
    return {d.lower().rstrip(".") for d in found if d}
