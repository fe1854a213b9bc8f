"""DMARC aggregate reports parsed by parsedmarc (zip and gzip attachments), kept once, summed by domain."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from estafeta.accounts import Accounts
from estafeta.audit import SYSTEM
from estafeta.clock import ManualClock
from estafeta.config import Settings
from estafeta.delivery.mx import make_resolver
from estafeta.domains import Domains, dns_records
from estafeta.reports.dmarc import DmarcReports, parse_report
from estafeta.store.db import Database
from estafeta.world import World
from estafeta.world.dmarc_reports import Row, report_message, report_xml

DAY = datetime(2026, 3, 1, tzinfo=UTC)
OURS = Row("127.0.0.2", "acme.test", "bounces.estafeta.test", "pass", "pass", "acme.test", "s1")
SPOOFER = Row("203.0.113.66", "acme.test", "acme.test", "fail", "none", "", "")
FORWARDER = Row("127.0.0.1", "news.acme.test", "acme.test", "pass", "fail", "acme.test", "s1")


def message(provider: str, rows: dict[Row, int], domain: str = "acme.test") -> bytes:
    reporter = next(p for p in World().providers if p.domain == provider)
    xml = report_xml(reporter, domain, {"p": "none"}, Counter(rows), DAY)
    return report_message(reporter, domain, "dmarc@bounces.estafeta.test", xml, DAY, DAY)


async def reports(world: World, db: Database) -> DmarcReports:
    settings = Settings(
        hostname="mta.estafeta.test",
        ip_pools={"bulk": ["127.0.0.2"]},
        dns_servers=[f"{world.dns_address[0]}:{world.dns_address[1]}"],
    )
    clock = ManualClock(DAY)
    domains = Domains(db, settings, clock)
    await domains.add((await Accounts(db, clock).create("acme", actor=SYSTEM)).id, "acme.test", actor=SYSTEM)
    return DmarcReports(db, settings, clock, make_resolver(settings.dns_servers), domains)


@pytest.mark.parametrize("provider", ["gmail.test", "yahoo.test"])  # a zip attachment, a gzip one
def test_both_compressions_parse_into_the_report_rows(provider: str) -> None:
    report = parse_report(message(provider, {OURS: 5, SPOOFER: 2}))
    assert report is not None
    assert (report.domain, report.org_name, report.policy["p"]) == ("acme.test", provider, "none")
    assert (report.begin_at, report.end_at) == (DAY, DAY.replace(hour=23, minute=59, second=59))
    rows = {(r.source_ip, r.count, r.dkim, r.spf, r.header_from) for r in report.records}
    assert rows == {
        ("127.0.0.2", 5, "pass", "fail", "acme.test"),  # DKIM aligned; SPF passes for another domain
        ("203.0.113.66", 2, "fail", "fail", "acme.test"),
    }


def test_mail_that_is_no_aggregate_report_is_not_one() -> None:
    assert parse_report(b"From: a@b.test\r\nSubject: hi\r\n\r\nhello\r\n") is None


async def test_reports_are_kept_once_and_summed_per_from_domain(world: World, db: Database) -> None:
    dmarc = await reports(world, db)
    assert await dmarc.ingest(message("gmail.test", {OURS: 5, SPOOFER: 2, FORWARDER: 4})) == "stored"
    assert await dmarc.ingest(message("yahoo.test", {OURS: 3})) == "stored"
    assert await dmarc.ingest(message("yahoo.test", {OURS: 3})) == "stored"  # the next day's: a new report id
    summary = await dmarc.summary("acme.test")
    assert (summary.reports, summary.reporters, summary.messages) == (3, ["gmail.test", "yahoo.test"], 13)
    ours, spoofer = summary.sources
    assert (ours.ip, ours.ptr, ours.ours, ours.messages, ours.dkim_pass, ours.spf_pass) == (
        "127.0.0.2", "mta2.estafeta.test", True, 11, 11, 0,
    )  # fmt: skip
    assert (spoofer.ip, spoofer.ptr, spoofer.ours, spoofer.dmarc_pass) == ("203.0.113.66", "", False, 0)
    assert [s.ip for s in summary.unknown] == ["203.0.113.66"]
    assert (summary.rate("dkim_pass"), summary.rate("spf_pass")) == (round(11 / 13, 4), 0.0)
    # news.acme.test is another From domain: its own view, where the hostname's address is ours
    (forwarder,) = (await dmarc.summary("news.acme.test")).sources
    assert forwarder.ours and forwarder.spf_pass == 4 and forwarder.dkim_pass == 0


async def test_a_report_received_twice_counts_once(world: World, db: Database) -> None:
    dmarc = await reports(world, db)
    raw = message("gmail.test", {OURS: 5})
    assert await dmarc.ingest(raw) == "stored"
    assert await dmarc.ingest(raw) == "duplicate"
    assert (await dmarc.summary("acme.test")).messages == 5


async def test_reports_about_other_domains_are_not_kept(world: World, db: Database) -> None:
    dmarc = await reports(world, db)
    assert await dmarc.ingest(message("gmail.test", {OURS: 5}, domain="globex.test")) == "unrelated"
    assert await dmarc.ingest(b"From: a@b.test\r\n\r\nnot a report\r\n") == "ignored"
    assert (await dmarc.summary("acme.test")).reports == 0


async def test_the_published_dmarc_record_sends_reports_to_the_inbound_listener(db: Database) -> None:
    settings = Settings(return_path_domain="bounces.example.com", inbound={"dmarc_address": "rua"})
    clock = ManualClock(DAY)
    domains = Domains(db, settings, clock)
    row, _ = await domains.add(
        (await Accounts(db, clock).create("acme", actor=SYSTEM)).id,
        "acme.example",
        "ed25519-sha256",
        actor=SYSTEM,
    )
    (dmarc,) = [r for r in dns_records(row, settings) if r.name == "_dmarc.acme.example"]
    assert dmarc.value == "v=DMARC1; p=none; rua=mailto:rua@bounces.example.com"
