"""TLS-RPT (RFC 8460): count how outbound sessions were secured, and the reports made of the counts.

Delivery counts every session it opens (or refuses to open for TLS reasons) per UTC day, destination,
policy and outcome, in memory, and adds the counts to the database every few seconds (several delivery
processes add to the same rows). `estafeta.reports.tls` sends the daily reports built here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time, timedelta
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP
from email.utils import format_datetime
from typing import Any

from estafeta.clock import Clock
from estafeta.delivery.client import Observer, TlsOutcome
from estafeta.delivery.mta_sts import Lookup
from estafeta.store import mta_sts as store
from estafeta.store.db import Database

MEDIA_TYPE = "application/tlsrpt+gzip"


class SessionCounter:
    """Counts of sessions not yet added to the database."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._counts: Counter[store.SessionKey] = Counter()

    def observer(self, domain: str, lookup: Lookup) -> Observer:
        """Where `open_session` tells how each session to `domain` went, under the policy that applied."""
        policy = lookup.policy if lookup.policy is not None and lookup.policy.mode != "none" else None
        policy_type, policy_id = ("sts", policy.id) if policy is not None else ("no-policy-found", "")
        day = self.clock.now().date()
        if lookup.failure is not None:  # discovery failed: counted once per attempt to open a session
            key = store.SessionKey(
                day, domain, policy_type, policy_id, lookup.failure, detail=lookup.detail[:200]
            )
            self._counts[key] += 1

        def observe(outcome: TlsOutcome) -> None:
            key = store.SessionKey(
                day,
                domain,
                policy_type,
                policy_id,
                outcome.result,
                outcome.sending_ip,
                outcome.mx_host,
                outcome.receiving_ip,
                outcome.detail[:200],
            )
            self._counts[key] += 1

        return observe

    async def flush(self) -> None:
        if not self._counts:
            return
        counts, self._counts = dict(self._counts), Counter()
        try:
            await self.db.run(store.add_sessions, counts)
        except Exception:
            self._counts.update(counts)  # the next flush tries again
            raise


def build_report(
    *,
    organization: str,
    contact: str,
    report_id: str,
    domain: str,
    day: date,
    sessions: list[store.SessionCount],
    policies: dict[str, store.PolicyRow],
) -> dict[str, Any]:
    """The RFC 8460 §4.4 report for one destination and one UTC day."""
    groups: dict[tuple[str, str], list[store.SessionCount]] = defaultdict(list)
    for session in sessions:
        groups[(session.key.policy_type, session.key.policy_id)].append(session)
    entries = []
    for (policy_type, policy_id), counted in sorted(groups.items()):
        policy: dict[str, Any] = {"policy-type": policy_type, "policy-domain": domain}
        known = policies.get(policy_id)
        if policy_type == "sts" and known is not None:
            policy["policy-string"] = [line.rstrip("\r") for line in known.text.split("\n") if line.strip()]
            policy["mx-host"] = list(known.mx)
        failures: Counter[tuple[str, str, str, str, str]] = Counter()
        successes = 0
        for session in counted:
            key = session.key
            if key.result == "success":
                successes += session.count
            else:
                failures[(key.result, key.sending_ip, key.mx_host, key.receiving_ip, key.detail)] += (
                    session.count
                )
        entry: dict[str, Any] = {
            "policy": policy,
            "summary": {
                "total-successful-session-count": successes,
                "total-failure-session-count": sum(failures.values()),
            },
        }
        if failures:
            entry["failure-details"] = [_failure(fields, count) for fields, count in sorted(failures.items())]
        entries.append(entry)
    start = datetime.combine(day, time(), UTC)
    return {
        "organization-name": organization,
        "date-range": {
            "start-datetime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end-datetime": (start + timedelta(days=1, seconds=-1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "contact-info": contact,
        "report-id": report_id,
        "policies": entries,
    }


def _failure(fields: tuple[str, str, str, str, str], count: int) -> dict[str, Any]:
    result, sending_ip, mx_host, receiving_ip, detail = fields
    found: dict[str, Any] = {"result-type": result}
    for name, value in (
        ("sending-mta-ip", sending_ip),
        ("receiving-mx-hostname", mx_host),
        ("receiving-ip", receiving_ip),
    ):
        if value:
            found[name] = value
    found["failed-session-count"] = count
    if detail:
        found["failure-reason-code"] = detail
    return found


def report_filename(submitter: str, domain: str, day: date, unique: str) -> str:
    """RFC 8460 §5.1: `sender!policy-domain!begin!end!unique.json.gz` (UNIX timestamps)."""
    begin = int(datetime.combine(day, time(), UTC).timestamp())
    return f"{submitter}!{domain}!{begin}!{begin + 86399}!{unique}.json.gz"


def report_message(
    report: bytes,
    *,
    filename: str,
    domain: str,
    submitter: str,
    report_id: str,
    sender: str,
    to: str,
    now: datetime,
) -> bytes:
    """The report as mail (RFC 8460 §5.3): multipart/report with the gzipped JSON attached."""
    message = MIMEMultipart("report", policy=SMTP)
    message.set_param("report-type", "tlsrpt")
    message["From"] = sender
    message["To"] = to
    message["Subject"] = f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report_id}>"
    message["Date"] = format_datetime(now)
    message["TLS-Report-Domain"] = domain
    message["TLS-Report-Submitter"] = submitter
    message["Auto-Submitted"] = "auto-generated"
    text = f"This is an aggregate TLS report (RFC 8460) from {submitter} for {domain}.\n"
    message.attach(MIMEText(text, "plain", "us-ascii", policy=SMTP))
    attachment = MIMEApplication(report, "tlsrpt+gzip", policy=SMTP)
    attachment.add_header("Content-Disposition", "attachment", filename=filename)
    message.attach(attachment)
    return message.as_bytes()
