"""DMARC aggregate reports (RFC 7489 §7.2) from the simulated providers, as Gmail and Yahoo send them.

Providers that report (gmail.test zips its reports, yahoo.test gzips them) count every message they
accept by From domain, source IP and authentication results: DKIM as the receivers verified it (aligned
with From), SPF of the envelope sender's domain for the client IP. `World.send_dmarc_reports()` mails one
report per provider and domain to the `rua` of the domain's DMARC record, then starts counting afresh.
Every report also lists a source the platform never sends from (`UNKNOWN_SENDER`), failing SPF and DKIM:
someone else using the domain, which the platform's DMARC view must point out.
"""

from __future__ import annotations

import gzip
import io
import itertools
import threading
import zipfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import SMTP
from email.utils import format_datetime
from xml.etree import ElementTree

from dkim.util import InvalidTagValueList, parse_tag_value

from estafeta.world.authentication import dmarc_record, organizational, spf_result
from estafeta.world.postmaster import from_domain
from estafeta.world.providers import Provider
from estafeta.world.receivers import Received
from estafeta.world.zone import WorldZone

REPORTING = {"gmail.test": "zip", "yahoo.test": "gzip"}  # providers that report, and how they compress
UNKNOWN_SENDER = ("203.0.113.66", 3)  # (source IP, messages): a sender that is not the platform

_REPORT_IDS = itertools.count(1)


@dataclass(frozen=True)
class Row:
    """Messages counted together in a report's `<record>`."""

    source_ip: str
    header_from: str
    envelope_from: str
    spf: str  # the SPF result of envelope_from
    dkim: str  # pass (aligned), fail, none
    dkim_domain: str
    dkim_selector: str


def _signature(message: bytes) -> tuple[str, str]:
    """(d=, s=) of the message's first DKIM signature, or empty strings."""
    end = message.find(b"\r\n\r\n")
    value = BytesHeaderParser().parsebytes(message if end < 0 else message[: end + 2]).get("DKIM-Signature")
    if value is None:
        return "", ""
    try:
        tags = parse_tag_value("".join(str(value).split()).encode())
    except InvalidTagValueList:
        return "", ""
    return tags.get(b"d", b"").decode(errors="replace").lower(), tags.get(b"s", b"").decode(errors="replace")


def report_xml(
    provider: Provider, policy_domain: str, tags: dict[str, str], rows: Counter[Row], day: datetime
) -> bytes:
    """The RFC 7489 Appendix C document for one provider, domain and day."""
    feedback = ElementTree.Element("feedback")
    metadata = ElementTree.SubElement(feedback, "report_metadata")
    begin = int(day.timestamp())
    for tag, text in (
        ("org_name", provider.domain),
        ("email", f"noreply-dmarc-support@{provider.domain}"),
        ("report_id", f"{provider.domain}-{begin}-{next(_REPORT_IDS)}"),
    ):
        ElementTree.SubElement(metadata, tag).text = text
    period = ElementTree.SubElement(metadata, "date_range")
    ElementTree.SubElement(period, "begin").text = str(begin)
    ElementTree.SubElement(period, "end").text = str(begin + 86399)
    published = ElementTree.SubElement(feedback, "policy_published")
    policy = tags.get("p", "none")
    for tag, text in (
        ("domain", policy_domain),
        ("adkim", tags.get("adkim", "r")),
        ("aspf", tags.get("aspf", "r")),
        ("p", policy),
        ("sp", tags.get("sp", policy)),
        ("pct", tags.get("pct", "100")),
    ):
        ElementTree.SubElement(published, tag).text = text
    for row, count in sorted(rows.items(), key=lambda item: (-item[1], item[0].source_ip)):
        envelope = row.envelope_from or row.header_from
        spf_aligned = row.spf == "pass" and organizational(envelope) == organizational(row.header_from)
        dkim_aligned = row.dkim == "pass"
        record = ElementTree.SubElement(feedback, "record")
        entry = ElementTree.SubElement(record, "row")
        ElementTree.SubElement(entry, "source_ip").text = row.source_ip
        ElementTree.SubElement(entry, "count").text = str(count)
        evaluated = ElementTree.SubElement(entry, "policy_evaluated")
        disposition = "none" if spf_aligned or dkim_aligned else policy
        ElementTree.SubElement(evaluated, "disposition").text = disposition
        ElementTree.SubElement(evaluated, "dkim").text = "pass" if dkim_aligned else "fail"
        ElementTree.SubElement(evaluated, "spf").text = "pass" if spf_aligned else "fail"
        identifiers = ElementTree.SubElement(record, "identifiers")
        ElementTree.SubElement(identifiers, "header_from").text = row.header_from
        ElementTree.SubElement(identifiers, "envelope_from").text = envelope
        results = ElementTree.SubElement(record, "auth_results")
        if row.dkim_domain:
            dkim = ElementTree.SubElement(results, "dkim")
            ElementTree.SubElement(dkim, "domain").text = row.dkim_domain
            ElementTree.SubElement(dkim, "selector").text = row.dkim_selector
            ElementTree.SubElement(dkim, "result").text = "pass" if row.dkim == "pass" else "fail"
        spf = ElementTree.SubElement(results, "spf")
        ElementTree.SubElement(spf, "domain").text = envelope
        ElementTree.SubElement(spf, "result").text = row.spf
    return b'<?xml version="1.0" encoding="UTF-8" ?>\n' + ElementTree.tostring(feedback)


def report_message(
    provider: Provider, policy_domain: str, rua: str, xml: bytes, day: datetime, now: datetime
) -> bytes:
    """The report as the provider mails it: zipped (Gmail) or gzipped (Yahoo) XML attached."""
    begin = int(day.timestamp())
    name = f"{provider.domain}!{policy_domain}!{begin}!{begin + 86399}"
    if REPORTING[provider.domain] == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"{name}.xml", xml)
        payload, subtype, filename = buffer.getvalue(), "zip", f"{name}.zip"
    else:
        payload, subtype, filename = gzip.compress(xml), "gzip", f"{name}.xml.gz"
    message = EmailMessage(policy=SMTP)
    message["From"] = f"noreply-dmarc-support@{provider.domain}"
    message["To"] = rua
    message["Subject"] = f"Report domain: {policy_domain} Submitter: {provider.domain}"
    message["Date"] = format_datetime(now)
    message["Message-ID"] = f"<dmarc-{begin}-{next(_REPORT_IDS)}@{provider.domain}>"
    message.set_content(f"DMARC aggregate report from {provider.domain} for {policy_domain}.\n")
    message.add_attachment(payload, maintype="application", subtype=subtype, filename=filename)
    return message.as_bytes()


class DmarcBook:
    """What the reporting providers accepted, by domain, since their last reports (thread-safe)."""

    def __init__(self, zone: WorldZone) -> None:
        self._zone = zone
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str], Counter[Row]] = {}
        self._first: dict[tuple[str, str], datetime] = {}

    def after_accept(self, provider: Provider, received: Received) -> None:
        if provider.domain not in REPORTING:
            return
        domain = from_domain(received.data)
        if domain is None:
            return
        envelope = received.mail_from.rpartition("@")[2].lower()
        signer, selector = _signature(received.data)
        row = Row(
            received.peer,
            domain,
            envelope,
            spf_result(self._zone, received.mail_from, received.peer, received.helo),
            received.dkim,
            signer,
            selector,
        )
        with self._lock:
            key = (provider.domain, domain)
            self._rows.setdefault(key, Counter())[row] += len(received.rcpt_to)
            self._first.setdefault(key, received.received_at)

    def take_reports(self, providers: dict[str, Provider], now: datetime) -> list[tuple[str, str, bytes]]:
        """(provider, rua address, message) for every domain with counts and a `rua=mailto:`; the
        counts start afresh."""
        with self._lock:
            rows, self._rows = self._rows, {}
            first, self._first = self._first, {}
        reports = []
        for (provider_domain, domain), counted in sorted(rows.items()):
            found = dmarc_record(self._zone, domain)
            if found is None:
                continue
            policy_domain, tags = found
            uris = [uri.strip() for uri in tags.get("rua", "").split(",")]
            ruas = [uri[len("mailto:") :].split("!")[0] for uri in uris if uri.lower().startswith("mailto:")]
            if not ruas:
                continue
            ip, messages = UNKNOWN_SENDER
            counted[Row(ip, domain, domain, "fail", "none", "", "")] += messages
            day = datetime.combine(first[(provider_domain, domain)].astimezone(UTC).date(), time(), UTC)
            provider = providers[provider_domain]
            xml = report_xml(provider, policy_domain, tags, counted, day)
            for rua in ruas:
                message = report_message(provider, policy_domain, rua, xml, day, now + timedelta(seconds=1))
                reports.append((provider_domain, rua, message))
        return reports

    def reset(self) -> None:
        with self._lock:
            self._rows.clear()
            self._first.clear()
