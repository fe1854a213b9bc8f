"""The daily TLS-RPT reports (RFC 8460) to destinations, made of the session counts delivery keeps.

Once a UTC day is over, one JSON report per destination that publishes `_smtp._tls.<domain> TXT
"v=TLSRPTv1; rua=…"` (parsed with checkdmarc) is gzipped and sent to each `rua`: `mailto:` through the
platform's own queue (a `multipart/report; report-type=tlsrpt` message, DKIM-signed like all its mail),
`https:` as a POST through the public-address guard. A report is recorded before it is sent, so several
processes never send the same one; an https: POST that fails is not retried (the outcome is recorded).
"""

from __future__ import annotations

import gzip
import json
import logging
import uuid
from datetime import date, timedelta

import dns.asyncresolver
import dns.exception
import dns.resolver
import httpx
from checkdmarc.smtp_tls_reporting import SMTPTLSReportingError, parse_smtp_tls_reporting_record

from estafeta import public_http
from estafeta.accept import Accepter, AcceptError
from estafeta.clock import Clock
from estafeta.compose import parse_address
from estafeta.config import Settings
from estafeta.delivery.tlsrpt import MEDIA_TYPE, build_report, report_filename, report_message
from estafeta.store import mta_sts as store
from estafeta.store.db import Database
from estafeta.system_senders import SystemSenders
from estafeta.tls import trust_context

log = logging.getLogger("estafeta.tlsrpt")

SYSTEM_ACCOUNT = "estafeta-reports"
KEEP_DAYS = 30  # session counts and the record of sent reports are pruned after this


class TlsReports:
    """The scheduler's job: one report per destination and finished day."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        resolver: dns.asyncresolver.Resolver,
        resolve_addresses: public_http.Resolve,
        accepter: Accepter,
        senders: SystemSenders,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.resolver = resolver
        self.resolve_addresses = resolve_addresses
        self.accepter = accepter
        self.senders = senders
        self._sender_id: int | None = None

    @property
    def submitter(self) -> str:
        return parse_address(self.settings.tls_reports.from_).domain

    async def send(self) -> int:
        """Report every finished day not reported yet; returns how many reports went out."""
        if not self.settings.tls_reports.enabled:
            return 0
        today = self.clock.now().date()
        await self.db.run(store.prune, today - timedelta(days=KEEP_DAYS))
        sent = 0
        for domain, day in await self.db.run(store.unreported_days, today):
            if await self._report(domain, day):
                sent += 1
        return sent

    async def _destinations(self, domain: str) -> list[str]:
        """The `rua` URIs of the destination's TLSRPT record (none when it publishes none)."""
        try:
            answer = await self.resolver.resolve(f"_smtp._tls.{domain}", "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        records = [b"".join(r.strings).decode("ascii", errors="replace") for r in answer]
        records = [r for r in records if r.startswith("v=TLSRPTv1")]
        if len(records) != 1:
            return []
        try:
            rua = parse_smtp_tls_reporting_record(records[0])["tags"]["rua"]["value"]
        except (SMTPTLSReportingError, KeyError):
            log.info("TLS-RPT: the record of %s is not valid; no report", domain)
            return []
        return [uri for uri in rua if uri.lower().startswith(("mailto:", "https:"))]

    async def _report(self, domain: str, day: date) -> bool:
        try:
            destinations = await self._destinations(domain)
        except dns.exception.DNSException as exc:
            log.info("TLS-RPT: no report for %s yet: %s", domain, exc)
            return False  # tried again on the next round
        unique = uuid.uuid4().hex
        report_id = f"{day.isoformat()}.{unique}@{self.submitter}"
        now = self.clock.now()
        if not await self.db.run(store.claim_report, domain, day, report_id, destinations, now):
            return False
        if not destinations:
            await self.db.run(store.report_outcome, domain, day, "no TLSRPT record published")
            return False
        counted = await self.db.run(store.sessions, domain, day)
        ids = {c.key.policy_id for c in counted if c.key.policy_id}
        settings = self.settings.tls_reports
        report = build_report(
            organization=settings.organization,
            contact=settings.contact or settings.from_,
            report_id=report_id,
            domain=domain,
            day=day,
            sessions=counted,
            policies=await self.db.run(store.policies, domain, ids),
        )
        body = gzip.compress(json.dumps(report, indent=1).encode())
        filename = report_filename(self.submitter, domain, day, unique)
        outcomes = []
        for uri in destinations:
            if uri.lower().startswith("mailto:"):
                outcomes.append(await self._mail(uri, body, filename, domain, report_id))
            else:
                outcomes.append(await self._post(uri, body))
        await self.db.run(store.report_outcome, domain, day, "; ".join(outcomes))
        log.info("TLS-RPT: report %s for %s sent: %s", report_id, domain, "; ".join(outcomes))
        return True

    async def _sender(self) -> int:
        if self._sender_id is None:
            self._sender_id = await self.senders.account_for(SYSTEM_ACCOUNT, self.settings.tls_reports.from_)
        return self._sender_id

    async def _mail(self, uri: str, body: bytes, filename: str, domain: str, report_id: str) -> str:
        to = uri[len("mailto:") :].split("?", 1)[0]
        sender = self.settings.tls_reports.from_
        raw = report_message(
            body,
            filename=filename,
            domain=domain,
            submitter=self.submitter,
            report_id=report_id,
            sender=sender,
            to=to,
            now=self.clock.now(),
        )
        try:
            parse_address(to)
            accepted = await self.accepter.accept_raw(await self._sender(), sender, [to], raw)
        except (ValueError, AcceptError) as exc:
            return f"{uri}: not queued ({exc})"
        return f"{uri}: queued as message {accepted.id}"

    async def _post(self, uri: str, body: bytes) -> str:
        timeout = httpx.Timeout(self.settings.tls_reports.timeout)
        async with public_http.client(
            timeout,
            httpx.Limits(max_connections=1),
            allow_private=self.settings.mta_sts.allow_private_addresses,
            resolve=self.resolve_addresses,
            ssl_context=trust_context(self.settings.mta_sts.ca_file),
        ) as client:
            try:
                response = await client.post(uri, content=body, headers={"Content-Type": MEDIA_TYPE})
            except httpx.HTTPError as exc:
                return f"{uri}: failed ({exc or type(exc).__name__})"
        return f"{uri}: HTTP {response.status_code}"
