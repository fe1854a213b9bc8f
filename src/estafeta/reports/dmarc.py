"""DMARC aggregate reports (RFC 7489 §7.2): what receivers saw of mail using our customers' domains.

Receivers mail the reports (XML, gzip- or zip-compressed) to the `rua` of a domain's DMARC record; the
platform publishes `rua=mailto:<inbound.dmarc_address>@<return_path_domain>`, so they reach the inbound
listener, which hands each message here. parsedmarc reads it, offline: its own DNS and IP enrichment is
switched off, and the only lookups made are the PTRs of the sources, with the platform's resolver. A
report is kept when it concerns a registered sending domain (its policy domain, a parent or a child of
one); a report received twice (same reporter, same report id) is kept once.

Per sending domain, `summary` folds the reports' rows by source IP: messages, DKIM and SPF results as
DMARC evaluated them (aligned passes), and whether the source is one of the platform's sending
addresses (`ip_pools` and the addresses of `hostname`). Sources that are not are other senders using
the domain: another service the customer forgot to authorise, or someone spoofing it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename
import parsedmarc
from parsedmarc.utils import human_timestamp_to_datetime

from estafeta.clock import Clock
from estafeta.config import Settings
from estafeta.domains import DomainError, Domains, normalise_domain
from estafeta.store import dmarc as store
from estafeta.store.db import Database

log = logging.getLogger("estafeta.dmarc")

PTR_TIMEOUT = 3.0
MAX_PTR_LOOKUPS = 100  # sources looked up per report; a report with more keeps the rest without PTR


def parse_report(raw: bytes) -> store.NewReport | None:
    """The aggregate report a message carries, or None when it carries none (a failure report, a TLS
    report, anything else)."""
    try:
        parsed = parsedmarc.parse_report_email(raw, offline=True, always_use_local_files=True)
    except parsedmarc.ParserError as exc:
        log.info("DMARC: a message to the rua address is not a report: %s", exc)
        return None
    if parsed["report_type"] != "aggregate":
        return None
    report: dict[str, Any] = dict(parsed["report"])
    metadata, policy = report["report_metadata"], dict(report["policy_published"])
    records = [
        store.NewRecord(
            source_ip=row["source"]["ip_address"],
            ptr="",
            count=int(row["count"]),
            disposition=str(row["policy_evaluated"].get("disposition") or ""),
            dkim="pass" if row["policy_evaluated"].get("dkim") == "pass" else "fail",
            spf="pass" if row["policy_evaluated"].get("spf") == "pass" else "fail",
            header_from=str(row["identifiers"].get("header_from") or "").lower(),
            envelope_from=str(row["identifiers"].get("envelope_from") or "").lower(),
            auth_results={key: list(value) for key, value in row["auth_results"].items()},
        )
        for row in report["records"]
    ]
    return store.NewReport(
        domain=str(policy["domain"]).lower(),
        org_name=str(metadata["org_name"]),
        org_email=str(metadata.get("org_email") or ""),
        report_id=str(metadata["report_id"]),
        begin_at=_utc(metadata["begin_date"]),
        end_at=_utc(metadata["end_date"]),
        policy={k: v for k, v in policy.items() if v is not None},
        records=records,
    )


def _utc(value: str) -> datetime:
    """parsedmarc writes report times in this machine's local time, without a zone."""
    return human_timestamp_to_datetime(value, to_utc=True).astimezone(UTC)


def _related(domain: str, registered: str) -> bool:
    return domain == registered or registered.endswith("." + domain) or domain.endswith("." + registered)


@dataclass
class Source:
    """One source IP's mail using a domain, over the reports of a period."""

    ip: str
    ptr: str
    messages: int = 0
    dkim_pass: int = 0
    spf_pass: int = 0
    dmarc_pass: int = 0  # aligned DKIM or aligned SPF
    ours: bool = False
    reporters: set[str] = field(default_factory=set)

    def as_json(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "ptr": self.ptr or None,
            "messages": self.messages,
            "dkim_pass": self.dkim_pass,
            "spf_pass": self.spf_pass,
            "dmarc_pass": self.dmarc_pass,
            "ours": self.ours,
            "reporters": sorted(self.reporters),
        }


@dataclass
class Summary:
    """What DMARC reports say about one sending domain over a period."""

    domain: str
    since: datetime
    reports: int
    reporters: list[str]
    sources: list[Source]

    @property
    def messages(self) -> int:
        return sum(s.messages for s in self.sources)

    def rate(self, name: str) -> float | None:
        total = self.messages
        return round(sum(getattr(s, name) for s in self.sources) / total, 4) if total else None

    @property
    def unknown(self) -> list[Source]:
        return [s for s in self.sources if not s.ours]

    def as_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "since": self.since.isoformat().replace("+00:00", "Z"),
            "reports": self.reports,
            "reporters": self.reporters,
            "messages": self.messages,
            "dkim_pass_rate": self.rate("dkim_pass"),
            "spf_pass_rate": self.rate("spf_pass"),
            "dmarc_pass_rate": self.rate("dmarc_pass"),
            "sources": [s.as_json() for s in self.sources],
            "unknown_senders": [s.as_json() for s in self.unknown],
        }


class DmarcReports:
    """Takes reports in (the inbound listener) and sums them up (API, CLI)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        resolver: dns.asyncresolver.Resolver,
        domains: Domains,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.resolver = resolver
        self.domains = domains

    async def ingest(self, raw: bytes) -> str:
        """Keep the report in a message; returns what became of it: stored, duplicate, unrelated,
        ignored (no aggregate report)."""
        report = await asyncio.to_thread(parse_report, raw)
        if report is None:
            return "ignored"
        registered = [row.name for row in await self.domains.list()]
        if not any(_related(report.domain, name) for name in registered):
            log.info("DMARC: report %s from %s is about %s, no domain of ours", report.report_id,
                     report.org_name, report.domain)  # fmt: skip
            return "unrelated"
        ptrs = await self._ptrs({r.source_ip for r in report.records})
        for record in report.records:
            record.ptr = ptrs.get(record.source_ip, "")
        stored = await self.db.run(store.save_report, report, self.clock.now())
        if stored:
            log.info("DMARC: report %s from %s for %s kept (%d rows)", report.report_id, report.org_name,
                     report.domain, len(report.records))  # fmt: skip
        return "stored" if stored else "duplicate"

    async def _ptrs(self, addresses: set[str]) -> dict[str, str]:
        async def one(address: str) -> tuple[str, str]:
            try:
                name = dns.reversename.from_address(address)
                answer = await self.resolver.resolve(name, "PTR", lifetime=PTR_TIMEOUT)
            except (dns.exception.DNSException, ValueError):
                return address, ""
            return address, answer[0].target.to_text(omit_final_dot=True).lower()

        found = await asyncio.gather(*(one(a) for a in sorted(addresses)[:MAX_PTR_LOOKUPS]))
        return dict(found)

    async def own_addresses(self) -> set[str]:
        """The platform's sending addresses: every pool address, and the addresses of `hostname`."""
        own = {str(a) for addresses in self.settings.ip_pools.values() for a in addresses}
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self.resolver.resolve(self.settings.hostname, rdtype, lifetime=PTR_TIMEOUT)
            except dns.exception.DNSException:
                continue
            own.update(str(ipaddress.ip_address(r.to_text())) for r in answer)
        return own

    async def account_summary(self, account_id: int, domain: str, days: int = 30) -> Summary:
        """`summary` of a sending domain of the account, as typed by a person; `DomainError` when it is
        not one (another account's domain is not told apart from an unknown one)."""
        name = normalise_domain(domain)
        row = await self.domains.find(name)
        if row is None or row.account_id != account_id:
            raise DomainError(f"{name} is not a sending domain of this account")
        return await self.summary(name, days)

    async def summary(self, domain: str, days: int = 30) -> Summary:
        """The sources of mail using `domain` (its From domain) in reports ending in the last `days`."""
        since = self.clock.now() - timedelta(days=days)
        rows = await self.db.run(store.records_for, domain, since)
        own = await self.own_addresses()
        sources: dict[str, Source] = {}
        reports: set[tuple[str, str]] = set()
        for row in rows:
            reports.add((row.org_name, row.report_id))
            source = sources.get(row.source_ip)
            if source is None:
                source = sources[row.source_ip] = Source(row.source_ip, row.ptr, ours=row.source_ip in own)
            source.messages += row.count
            source.dkim_pass += row.count if row.dkim == "pass" else 0
            source.spf_pass += row.count if row.spf == "pass" else 0
            source.dmarc_pass += row.count if "pass" in (row.dkim, row.spf) else 0
            source.reporters.add(row.org_name)
            source.ptr = source.ptr or row.ptr
        ordered = sorted(sources.values(), key=lambda s: (-s.messages, s.ip))
        return Summary(domain, since, len(reports), sorted({org for org, _ in reports}), ordered)
