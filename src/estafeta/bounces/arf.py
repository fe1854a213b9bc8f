"""Read feedback-loop complaints in the Abuse Reporting Format (RFC 5965).

A mailbox provider reports that one of its users pressed "this is spam" with a multipart/report whose
second part (message/feedback-report) describes the complaint and whose third part is the original
message or its headers.  The platform needs to know who complained about which message, so it can
suppress the address and count the complaint against the sender.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import Message
from email.utils import parseaddr, parsedate_to_datetime

from estafeta.bounces.dsn import enclosed_original, find_part, original_message_id, verp_token


@dataclass(frozen=True)
class Complaint:
    feedback_type: str  # abuse, fraud, virus, other, not-spam …
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


def parse_complaint(raw: bytes) -> Complaint | None:
    """The complaint an ARF report carries, or None when the message is not an ARF report."""
    msg = message_from_bytes(raw, policy=policy.compat32)
    part = find_part(msg, "message/feedback-report")
    if part is None:
        return None
    payload = part.get_payload()
    report = payload[0] if isinstance(payload, list) and payload else Message()
    original = enclosed_original(msg) or Message()
    return Complaint(
        feedback_type=(_field(report, "Feedback-Type") or "other").lower(),
        user_agent=_field(report, "User-Agent"),
        version=_field(report, "Version"),
        original_rcpt_to=_address(_field(report, "Original-Rcpt-To")),
        original_mail_from=_address(_field(report, "Original-Mail-From")),
        reported_domain=_field(report, "Reported-Domain"),
        arrival_date=_date(_field(report, "Arrival-Date") or _field(report, "Received-Date")),
        source_ip=_field(report, "Source-IP"),
        original_message_id=original_message_id(msg),
        feedback_id=_field(original, "Feedback-ID"),
        verp_token=verp_token(original, ("Return-Path",)) or verp_token(report, ("Original-Mail-From",)),
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
