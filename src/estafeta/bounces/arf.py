"""Read complaints: feedback-loop reports in the Abuse Reporting Format (RFC 5965), and the ones that are not.

A mailbox provider reports that one of its users pressed "this is spam" with a multipart/report whose
second part (message/feedback-report) describes the complaint and whose third part is the original
message or its headers. Not every provider does it by the book: Hotmail/Outlook.com's older feedback loop
mails "complaint about message from <ip>" with only the original attached (the complainer named in its
X-HmXmrOriginalRecipient header), and an opt-out request is a complaint too. The platform needs to know who
complained about which message, so it can suppress the address and count the complaint against the sender.

Not every ARF report is a complaint: `auth-failure` reports (RFC 6591) are about the sender's SPF/DKIM/DMARC
and `not-spam` says the opposite of a complaint; `is_complaint` tells them apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import parseaddr, parsedate_to_datetime

from estafeta.bounces.dsn import enclosed_original, find_part, original_message_id, parse_message, verp_token

# Feedback types that are not a recipient's complaint (RFC 6591 authentication failure reports, "not spam").
NOT_COMPLAINTS = frozenset({"auth-failure", "dkim", "spf", "dmarc", "not-spam"})

_HOTMAIL_SUBJECT = re.compile(r"^\s*complaint about message from\s+([\d.:a-f]+|\S+)", re.I)


@dataclass(frozen=True)
class Complaint:
    feedback_type: str  # abuse, fraud, virus, other, opt-out, not-spam, auth-failure …
    user_agent: str | None
    version: str | None
    original_rcpt_to: str | None
    original_mail_from: str | None
    reported_domain: str | None
    arrival_date: datetime | None
    source_ip: str | None
    original_message_id: str | None  # from the enclosed original headers
    feedback_id: str | None  # Feedback-ID header of the enclosed original
    verp_token: str | None  # from the original's Return-Path or envelope sender when "bounces+<token>@…"
    source: str = "arf"  # arf, or the provider format it was read from

    @property
    def is_complaint(self) -> bool:
        return self.feedback_type not in NOT_COMPLAINTS


def parse_complaint(raw: bytes | Message) -> Complaint | None:
    """The complaint a report carries, or None when the message is not a complaint report."""
    msg = parse_message(raw) if isinstance(raw, bytes) else raw
    part = find_part(msg, "message/feedback-report")
    if part is None:
        return _hotmail_complaint(msg)
    payload = part.get_payload()
    report = payload[0] if isinstance(payload, list) and payload else Message()
    original = enclosed_original(msg) or Message()
    return Complaint(
        feedback_type=(_field(report, "Feedback-Type") or "other").lower(),
        user_agent=_field(report, "User-Agent"),
        version=_field(report, "Version"),
        original_rcpt_to=_address(_field(report, "Original-Rcpt-To") or _field(report, "Removal-Recipient")),
        original_mail_from=_address(_field(report, "Original-Mail-From")),
        reported_domain=_field(report, "Reported-Domain"),
        arrival_date=_date(_field(report, "Arrival-Date") or _field(report, "Received-Date")),
        source_ip=_field(report, "Source-IP"),
        original_message_id=original_message_id(msg),
        feedback_id=_field(original, "Feedback-ID"),
        verp_token=verp_token(original, ("Return-Path",)) or verp_token(report, ("Original-Mail-From",)),
    )


def _hotmail_complaint(msg: Message) -> Complaint | None:
    """Hotmail/Outlook.com's feedback loop before ARF: the subject names the sending IP, the original is
    attached, and its X-HmXmrOriginalRecipient header names the person who complained."""
    subject = _HOTMAIL_SUBJECT.match(str(msg.get("Subject") or ""))
    original = enclosed_original(msg)
    if subject is None or original is None:
        return None
    return Complaint(
        feedback_type="abuse",
        user_agent=parseaddr(str(msg.get("From") or ""))[1] or None,
        version=None,
        original_rcpt_to=_address(_field(original, "X-HmXmrOriginalRecipient")),
        original_mail_from=_address(_field(original, "Return-Path")),
        reported_domain=None,
        arrival_date=_date(_field(msg, "Date")),
        source_ip=subject.group(1),
        original_message_id=original_message_id(msg),
        feedback_id=_field(original, "Feedback-ID"),
        verp_token=verp_token(original, ("Return-Path",)),
        source="hotmail",
    )


def _field(block: Message, name: str) -> str | None:
    value = block.get(name)
    return (" ".join(str(value).split()) or None) if value is not None else None


def _address(value: str | None) -> str | None:
    return (parseaddr(value)[1] or value) if value else None


def _date(value: str | None) -> datetime | None:
    """An RFC 5322 date as aware UTC; a date without a zone is taken as UTC."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
