"""Read Amazon SES-style JSON notifications (bounce, complaint, delivery), bare or inside an SNS envelope.

Platforms that relay through SES, or import its events, hand these over instead of mail; the same rules
classify them, so an SES "Permanent" bounce and a DSN saying the same thing get the same verdict.
"""

from __future__ import annotations

import json
from typing import Any

from estafeta.bounces.arf import Complaint
from estafeta.bounces.classify import classify_failure
from estafeta.bounces.dsn import BounceReport, RecipientFailure, overall_verdict
from estafeta.bounces.policy import Policy, judge
from estafeta.bounces.reasons import REASON_DETAIL, Evidence, Kind, Reason, Verdict

# What SES's own bounce sub-types mean when a recipient comes without a diagnostic of its receiver.
_SUBTYPES: dict[tuple[str, str], Reason] = {
    ("permanent", "general"): Reason.USER_UNKNOWN,
    ("permanent", "noemail"): Reason.USER_UNKNOWN,
    ("permanent", "suppressed"): Reason.USER_UNKNOWN,
    ("permanent", "onaccountsuppressionlist"): Reason.USER_UNKNOWN,
    ("transient", "mailboxfull"): Reason.MAILBOX_FULL,
    ("transient", "messagetoolarge"): Reason.MESSAGE_TOO_LARGE,
    ("transient", "contentrejected"): Reason.SPAM_CONTENT,
    ("transient", "attachmentrejected"): Reason.SPAM_CONTENT,
}


def load(raw: bytes | str) -> dict[str, Any] | None:
    """The notification in a JSON document (unwrapping an SNS envelope), or None if it is none."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(document, dict) and isinstance(document.get("Message"), str):  # an SNS envelope
        return load(document["Message"])
    if not isinstance(document, dict):
        return None
    kind = document.get("notificationType") or document.get("eventType")
    return document if kind in ("Bounce", "Complaint", "Delivery") else None


def complaint(notification: dict[str, Any]) -> Complaint | None:
    if (notification.get("notificationType") or notification.get("eventType")) != "Complaint":
        return None
    body = notification.get("complaint") or {}
    mail = notification.get("mail") or {}
    complained = [
        r.get("emailAddress") for r in body.get("complainedRecipients") or [] if isinstance(r, dict)
    ]
    return Complaint(
        feedback_type=str(body.get("complaintFeedbackType") or "abuse").lower(),
        user_agent=body.get("userAgent"),
        version=None,
        original_rcpt_to=next((a for a in complained if a), None),
        original_mail_from=mail.get("source"),
        reported_domain=None,
        arrival_date=None,
        source_ip=mail.get("sourceIp"),
        original_message_id=None,
        feedback_id=body.get("feedbackId"),
        verp_token=None,
        source="ses",
    )


def bounce(notification: dict[str, Any], policy: Policy) -> BounceReport:
    """A Bounce or Delivery notification as a report with one verdict per recipient."""
    kind = notification.get("notificationType") or notification.get("eventType")
    if kind == "Delivery":
        delivery = notification.get("delivery") or {}
        said = str(delivery.get("smtpResponse") or "delivered")
        evidence = (Evidence("ses", f"notificationType Delivery: '{said}'"),)
        recipients = [
            RecipientFailure(
                str(a), None, "delivered", said, Verdict(Kind.NONE, Reason.DELIVERED, None, None, said)
            )
            for a in delivery.get("recipients") or []
        ]
        return BounceReport(False, Kind.NONE, Reason.DELIVERED, recipients, None, None, None, "ses", evidence)
    body = notification.get("bounce") or {}
    bounce_type = str(body.get("bounceType") or "Undetermined")
    sub_type = str(body.get("bounceSubType") or "General")
    head = Evidence("ses", f"bounceType {bounce_type}, bounceSubType {sub_type}")
    transient = bounce_type.lower() != "permanent"
    failures = []
    for entry in body.get("bouncedRecipients") or []:
        if not isinstance(entry, dict) or not entry.get("emailAddress"):
            continue
        diagnostic = str(entry.get("diagnosticCode") or "")
        status = entry.get("status")
        if diagnostic or status:
            text = diagnostic.split(";", 1)[-1].strip()
            verdict = classify_failure(
                text, status=status, transient=transient, policy=policy, evidence=[head]
            )
        else:
            verdict = _by_subtype(bounce_type, sub_type, head, policy)
        failures.append(
            RecipientFailure(entry["emailAddress"], verdict.status, "failed", diagnostic or None, verdict)
        )
    overall = overall_verdict(failures) if failures else _by_subtype(bounce_type, sub_type, head, policy)
    return BounceReport(
        overall.kind is not Kind.NONE,
        overall.kind,
        overall.reason,
        failures,
        None,
        None,
        None,
        "ses",
        overall.evidence,
        overall.scope,
    )


def _by_subtype(bounce_type: str, sub_type: str, head: Evidence, policy: Policy) -> Verdict:
    reason = _SUBTYPES.get((bounce_type.lower(), sub_type.lower()), Reason.OTHER)
    evidence = [head, Evidence("ses", f"no diagnostic: SES's {bounce_type}/{sub_type} means {reason}")]
    if bounce_type.lower() != "permanent":
        return Verdict(Kind.SOFT, reason, None, None, REASON_DETAIL[reason], evidence=tuple(evidence))
    kind, scope, said = judge(reason, policy)
    evidence.append(said)
    return Verdict(kind, reason, None, None, REASON_DETAIL[reason], True, None, scope, tuple(evidence))
