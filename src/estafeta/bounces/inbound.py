"""The inbound listener of the return-path domain: what receivers mail back after they accepted a message.

Two kinds of address exist there, and nothing else is accepted (550 5.1.1, so this is no open relay):

* `bounces+<token>@<return_path_domain>`, the VERP return path of one queue entry, where late bounces
  (RFC 3464 DSNs or free-form ones) and automatic replies arrive. The token's HMAC must verify.
* `<fbl_address>@<return_path_domain>`, where feedback loops send complaints (ARF, RFC 5965, or the
  providers' own formats: see `estafeta.bounces.engine`).
* `unsub+<token>@<return_path_domain>`, the `mailto:` URI of list mail's List-Unsubscribe header (RFC 2369):
  any message there unsubscribes the address the signed token names (`estafeta.audience.unsubscribe`).
* `<dmarc_address>@<return_path_domain>`, the `rua` of the sending domains' DMARC records, where receivers
  mail DMARC aggregate reports (`estafeta.reports.dmarc`).
* `abuse@` and `postmaster@` each of the platform's own domains (the return-path domain, the tracking
  domain, `inbound.platform_domains`), where people report abuse: kept and matched to the sending account
  by the abuse desk (`estafeta.abuse`); a feedback-loop report among them is a complaint like any other.

DATA is answered 250 only once what the report means is committed: the event (`bounced` with
`data.async`, `soft_bounced`, `complained`, `auto_replied`) and the suppression it causes, in one
transaction. Mail that turns out to be neither a bounce nor a complaint is accepted and dropped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import Connection

from estafeta import verp
from estafeta.bounces.abuse import feedback_account
from estafeta.bounces.arf import Complaint
from estafeta.bounces.dsn import BounceReport
from estafeta.bounces.engine import Classification, classify_message
from estafeta.bounces.reasons import Kind, Reason, bounce_data
from estafeta.clock import Clock
from estafeta.config import Settings
from estafeta.limits import Limits, LimitsUnavailable
from estafeta.store import feedback
from estafeta.store.db import Database
from estafeta.suppression import for_bounce, for_complaint, soft_rule
from estafeta.suppression import policy as suppression_policy
from estafeta.tls import generate_self_signed, server_context, server_context_from_pem
from estafeta.waits import wait_set

log = logging.getLogger("estafeta.inbound")

TEMPORARY_FAILURE = "451 4.3.0 Report not processed because of a temporary error, try again later"
_DRAIN_ROUNDS = 100


@dataclass(frozen=True)
class Mailbox:
    """A recipient the listener accepts: the feedback-loop address, one queue entry's return path, or a
    mailto unsubscribe address."""

    fbl: bool
    delivery_id: int | None = None
    unsubscribe_token: str | None = None
    dmarc: bool = False
    abuse: bool = False


class MailtoUnsubscribe(Protocol):
    """Handles mail to `unsub+<token>@<return_path_domain>`."""

    def accepts(self, token: str) -> bool: ...

    async def mailto(self, token: str) -> None: ...


AfterComplaint = Callable[[Connection, int, datetime], None]
ABUSE_LOCAL_PARTS = ("abuse", "postmaster")


class AbuseIngest(Protocol):
    """The abuse desk: keeps a message sent to abuse@ or postmaster@ and acts on it."""

    def domains(self) -> set[str]: ...

    async def ingest(self, mailbox: str, raw: bytes, found: Classification) -> str: ...


class DmarcIngest(Protocol):
    """Keeps the DMARC aggregate report a message carries; returns what became of it."""

    async def ingest(self, raw: bytes) -> str: ...


class InboundHandler:
    """aiosmtpd hooks: which recipients exist, and what each report means."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        verp_secret: bytes,
        unsubscribe: MailtoUnsubscribe | None = None,
        after_complaint: AfterComplaint | None = None,
        dmarc: DmarcIngest | None = None,
        abuse: AbuseIngest | None = None,
        limits: Limits | None = None,
    ) -> None:
        """`limits` holds the abuse mailboxes' allowance per sending network (none: no limit)."""
        self.db = db
        self.limits = limits
        self.abuse_rate = settings.inbound.abuse_reports_per_hour
        self.clock = clock
        self.verp_secret = verp_secret
        self.unsubscribe = unsubscribe
        self.after_complaint = after_complaint
        self.dmarc = dmarc
        self.abuse = abuse
        self.abuse_domains = abuse.domains() if abuse is not None else set()
        self.dmarc_local = settings.inbound.dmarc_address.lower()
        self.domain = settings.return_path_domain.lower()
        self.fbl = settings.inbound.fbl_address.lower()
        self.rule = soft_rule(settings.suppression)
        self.policy = suppression_policy(settings.suppression)
        self.busy = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def mailbox(self, address: str) -> Mailbox | None:
        local, _, domain = address.rpartition("@")
        if local.lower() in ABUSE_LOCAL_PARTS and domain.lower().rstrip(".") in self.abuse_domains:
            return Mailbox(fbl=False, abuse=True)
        if domain.lower() != self.domain:
            return None
        if local.lower() == self.fbl:
            return Mailbox(fbl=True)
        if local.lower() == self.dmarc_local and self.dmarc is not None:
            return Mailbox(fbl=False, dmarc=True)
        prefix, _, token = local.partition("+")
        if prefix.lower() == "unsub" and token and self.unsubscribe is not None:
            return Mailbox(fbl=False, unsubscribe_token=token) if self.unsubscribe.accepts(token) else None
        if prefix.lower() != "bounces" or not token:
            return None
        delivery_id = verp.parse_token(token, self.verp_secret)
        return Mailbox(fbl=False, delivery_id=delivery_id) if delivery_id is not None else None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        mailbox = self.mailbox(address)
        if mailbox is None:
            return f"550 5.1.1 <{address}>: Recipient address rejected: no such mailbox here"
        if mailbox.abuse and (refusal := await self._over_abuse_allowance(session)) is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def _over_abuse_allowance(self, session: Session) -> str | None:
        """Abuse mailboxes keep what they receive, so each sending network may fill them only so fast; a
        real reporter's server retries a deferral, so nothing it reports is lost."""
        if self.limits is None or not self.abuse_rate:
            return None
        network = sending_network(session.peer[0] if isinstance(session.peer, tuple) else "")
        try:
            wait = await self.limits.take(f"inbound-abuse:{network}", self.abuse_rate / 3600, self.abuse_rate)
        except LimitsUnavailable:
            return TEMPORARY_FAILURE
        if wait <= 0:
            return None
        log.info("inbound: abuse reports from %s over the allowance", network)
        minutes = max(1, round(wait / 60))
        return f"450 4.7.1 Too many reports from your network; try again in {minutes} minutes"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content
        assert isinstance(raw, bytes)
        self.busy += 1
        self.idle.clear()
        try:
            for address in envelope.rcpt_tos:
                mailbox = self.mailbox(address)
                if mailbox is not None:
                    await self.process(mailbox, raw, address)
        except Exception:
            log.exception("inbound report could not be recorded")
            return TEMPORARY_FAILURE
        finally:
            self.busy -= 1
            if not self.busy:
                self.idle.set()
        return "250 2.0.0 OK"

    async def process(self, mailbox: Mailbox, raw: bytes, address: str = "") -> str:
        """Record what one report means; returns what it was taken for (for logs and tests)."""
        if mailbox.unsubscribe_token is not None and self.unsubscribe is not None:
            await self.unsubscribe.mailto(mailbox.unsubscribe_token)
            return "unsubscribed"
        if mailbox.dmarc and self.dmarc is not None:
            return await self.dmarc.ingest(raw)
        found = classify_message(raw, self.policy)  # the same engine as `estafeta bounces classify`
        if mailbox.abuse and self.abuse is not None:
            if found.complaint is not None and found.complaint.is_complaint:
                await self._complaint(found.complaint, None)  # a feedback loop's report: counted as today
            return await self.abuse.ingest(address, raw, found)
        if found.complaint is not None:  # some providers send complaints to the return path
            return await self._complaint(found.complaint, mailbox.delivery_id)
        if mailbox.delivery_id is None:
            log.info(
                "inbound: mail to the feedback-loop address is not a complaint (%s); dropped", found.reason
            )
            return "ignored"
        if found.report is None:  # a feedback report that is no complaint (auth-failure, not-spam)
            log.info("inbound: %s report on the return path; dropped", found.reason)
            return "ignored"
        return await self._bounce(mailbox.delivery_id, found.report)

    async def _bounce(self, delivery_id: int, report: BounceReport) -> str:
        target = await self.db.run(feedback.delivery_target, delivery_id)
        if target is None:
            return "ignored"
        now = self.clock.now()
        if not report.is_bounce:
            if report.reason is not Reason.OUT_OF_OFFICE:
                return "ignored"
            data: dict[str, Any] = {"async": True, "reason": str(Reason.OUT_OF_OFFICE)}
            await self.db.run(feedback.record, target, event="auto_replied", data=data, now=now)
            return "auto_replied"
        failure = next(
            (r for r in report.recipients if r.address.lower() == target.recipient.lower()),
            report.recipients[0] if report.recipients else None,
        )
        bounce = (
            bounce_data(failure.verdict)
            if failure
            else {
                "kind": str(report.kind),
                "reason": str(report.reason),
                "status": None,
                "scope": report.scope,
            }
        )
        diagnostic = (failure.diagnostic or failure.verdict.detail) if failure else ""
        data = {"async": True, "bounce": bounce, "diagnostic": diagnostic, "source": report.source}
        if bounce["kind"] == Kind.HARD:
            entries = for_bounce(
                target.account_id, target.recipient, str(bounce["scope"]), str(bounce["reason"]), diagnostic
            )
            await self.db.run(
                feedback.record,
                target,
                event="bounced",
                data=data,
                now=now,
                late_bounce=True,
                entries=entries,
            )
            return "bounced"
        await self.db.run(
            feedback.record,
            target,
            event="soft_bounced",
            data=data,
            now=now,
            soft_failure=bounce.get("blame") != "sender",  # the sender's refusals say nothing of the address
            rule=self.rule,
        )
        return "soft_bounced"

    async def _complaint(self, complaint: Complaint, delivery_id: int | None) -> str:
        target, matched_by = await self._complained_about(complaint, delivery_id)
        if target is None:
            log.info("inbound: complaint matches no message we sent; dropped")
            return "ignored"
        data = {
            "feedback_type": complaint.feedback_type,
            "user_agent": complaint.user_agent,
            "source_ip": complaint.source_ip,
            "feedback_id": complaint.feedback_id,
            "matched_by": matched_by,
            "format": complaint.source,
        }
        detail = f"{complaint.feedback_type} report from {complaint.user_agent or 'a feedback loop'}"
        entries = for_complaint(target.account_id, target.recipient, detail)
        now = self.clock.now()
        await self.db.run(feedback.record, target, event="complained", data=data, now=now, entries=entries)
        if self.after_complaint is not None:
            await self.db.run(self.after_complaint, target.account_id, now)
        return "complained"

    async def _complained_about(
        self, complaint: Complaint, delivery_id: int | None
    ) -> tuple[feedback.Target | None, str]:
        """The queue entry a complaint is about: by the VERP token, else by Message-ID (checked against the
        Feedback-ID's account and the reported recipient, so an ambiguous report suppresses no one)."""
        token_id = verp.parse_token(complaint.verp_token, self.verp_secret) if complaint.verp_token else None
        for candidate in (token_id, delivery_id):
            if candidate is not None:
                target = await self.db.run(feedback.delivery_target, candidate)
                if target is not None:
                    return target, "verp"
        if not complaint.original_message_id:
            return None, ""
        targets = await self.db.run(feedback.message_targets, complaint.original_message_id)
        account = feedback_account(complaint.feedback_id)
        if account is not None:
            targets = [t for t in targets if t.account_id == account]
        if complaint.original_rcpt_to:
            targets = [t for t in targets if t.recipient.lower() == complaint.original_rcpt_to.lower()]
        return (targets[0], "message-id") if len(targets) == 1 else (None, "")


def sending_network(host: str) -> str:
    """The network a client address belongs to for counting (IPv4 /24, IPv6 /64): one sender's
    neighbouring addresses count together."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


class _InboundSMTP(SMTP):
    def __init__(self, listener: InboundListener, **kwargs: Any) -> None:
        super().__init__(listener.handler, **kwargs)
        self._sessions = listener.sessions

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._sessions.discard(self)
        super().connection_lost(error)


class InboundListener:
    """The SMTP server for the return-path domain (`settings.inbound`)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        verp_secret: bytes,
        unsubscribe: MailtoUnsubscribe | None = None,
        after_complaint: AfterComplaint | None = None,
        dmarc: DmarcIngest | None = None,
        abuse: AbuseIngest | None = None,
        limits: Limits | None = None,
    ) -> None:
        """`unsubscribe` handles mailto unsubscribes; `after_complaint` reacts to each complaint in the
        transaction that stores it (reputation: a complaint counts at once); `dmarc` keeps the DMARC
        aggregate reports mailed to the rua address; `abuse` keeps and matches mail to abuse@ and
        postmaster@ the platform's domains, each sending network within its allowance in `limits`."""
        self.settings = settings
        self.handler = InboundHandler(
            db, settings, clock, verp_secret, unsubscribe, after_complaint, dmarc, abuse, limits
        )
        self.sessions: set[_InboundSMTP] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        """Listen in the running loop; returns (host, port), the port being the bound one when 0 was asked."""
        inbound = self.settings.inbound
        logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd logs every address at INFO
        loop = asyncio.get_running_loop()
        tls = await asyncio.to_thread(self._tls_context) if inbound.starttls else None
        self._server = await loop.create_server(
            lambda: _InboundSMTP(
                self,
                hostname=self.settings.hostname,
                ident="Estafeta ESMTP",
                data_size_limit=inbound.max_message_bytes,
                enable_SMTPUTF8=True,
                tls_context=tls,
                require_starttls=False,  # an MX takes mail in the clear from servers that cannot do TLS
                loop=loop,
            ),
            inbound.host,
            inbound.port,
        )
        port = self._server.sockets[0].getsockname()[1]
        log.info("inbound listener for %s on %s port %d", self.handler.domain, inbound.host, port)
        return inbound.host, port

    def _tls_context(self) -> ssl.SSLContext:
        """The platform's certificate; without one, a self-signed one (senders to an MX do not verify it,
        and nothing is written to disk)."""
        smtp = self.settings.smtp
        if smtp.tls_cert is not None and smtp.tls_key is not None:
            return server_context(smtp.tls_cert, smtp.tls_key)
        return server_context_from_pem(*generate_self_signed([self.settings.hostname]))

    async def stop(self, grace: float) -> None:
        """Stop listening, let reports being recorded finish, then drop the connections."""
        if self._server is None:
            return
        self._server.close()
        if not await wait_set(self.handler.idle, grace):
            log.warning("inbound stop: %d reports still being recorded", self.handler.busy)
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.close()
        await self._server.wait_closed()
        self._server = None
        for _ in range(_DRAIN_ROUNDS):
            if not self.sessions:
                break
            await asyncio.sleep(0)
