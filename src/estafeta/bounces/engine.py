"""The one entry point for everything that comes back after sending: what kind of report it is, its verdict.

`classify_message` takes whatever reached the return path, the feedback-loop address or a file on disk —
a DSN, a free-form bounce, an ARF or Hotmail complaint, an opt-out request, an Amazon SES JSON notification,
an automatic reply, an ordinary message, a bare SMTP reply or bare DSN fields — and returns one
`Classification`: the verdict (hard, soft, none or complaint), the reason, the recipients, what it suppresses,
and the evidence for all of it. The inbound listener records exactly this; `estafeta bounces classify`
prints it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message

from estafeta.bounces import notifications
from estafeta.bounces.arf import Complaint, parse_complaint
from estafeta.bounces.classify import classify_reply
from estafeta.bounces.dsn import (
    BounceReport,
    RecipientFailure,
    original_message_id,
    parse_bounce,
    parse_fields,
    parse_message,
    verp_token,
)
from estafeta.bounces.policy import DEFAULT_POLICY, Policy
from estafeta.bounces.reasons import Evidence, Kind, Reason

_REPLY = re.compile(rb"^\s*([2-5]\d\d)[ -]")
_FIELDS = re.compile(
    rb"^\s*(?:Reporting-MTA|Final-Recipient|Original-Recipient|Received-From-MTA|Arrival-Date)\s*:", re.I
)
_OPT_OUT_SUBJECT = re.compile(r"^\s*(?:re:\s*)?(?:unsubscribe|opt[- ]?out|remove me)\b", re.I)


@dataclass(frozen=True)
class Classification:
    verdict: str  # hard, soft, none, complaint
    reason: str
    recipients: list[str]
    status: str | None
    source: str  # dsn, heuristic, flufl, arf, hotmail, ses, opt-out, smtp
    suppresses: str  # global, account, none
    evidence: tuple[Evidence, ...] = ()
    report: BounceReport | None = field(default=None, compare=False)
    complaint: Complaint | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "recipients": self.recipients,
            "status": self.status,
            "source": self.source,
            "suppresses": self.suppresses,
        }


def classify_message(raw: bytes, policy: Policy = DEFAULT_POLICY) -> Classification:
    """Say what one message (or reply, or notification) means; see the module docstring."""
    head = raw[:200]
    if head.lstrip().startswith(b"{") and (notification := notifications.load(raw)) is not None:
        return _notification(notification, policy)
    if (reply := _REPLY.match(head)) is not None:
        return _reply(raw, int(reply.group(1)), policy)
    if _FIELDS.match(head):
        return _from_report(parse_fields(raw, policy))
    msg = parse_message(raw)
    complaint = parse_complaint(msg)
    if complaint is not None:
        return _from_complaint(complaint)
    if (opt_out := _opt_out(msg)) is not None:
        return _from_complaint(opt_out)
    embedded = _embedded_notification(msg)
    if embedded is not None:
        return _notification(embedded, policy)
    return _from_report(parse_bounce(msg, policy))


def _reply(raw: bytes, code: int, policy: Policy) -> Classification:
    text = raw.decode("utf-8", "replace").strip()
    verdict = classify_reply(code, text, policy=policy)
    evidence = (Evidence("format", f"an SMTP reply ({code})"), *verdict.evidence)
    return Classification(
        verdict.kind.value, verdict.reason.value, [], verdict.status, "smtp", verdict.scope, evidence
    )


def _from_report(report: BounceReport) -> Classification:
    statuses = list(dict.fromkeys(r.status for r in report.recipients if r.status))
    scope = (
        (_worst_scope(report.recipients) if report.recipients else report.scope)
        if report.kind is Kind.HARD
        else "none"
    )
    return Classification(
        verdict=report.kind.value,
        reason=report.reason.value,
        recipients=[r.address for r in report.recipients],
        status=", ".join(statuses) or None,
        source=report.source,
        suppresses=scope,
        evidence=report.evidence,
        report=report,
    )


def _worst_scope(recipients: list[RecipientFailure]) -> str:
    scopes = {r.verdict.scope for r in recipients}
    return next((s for s in ("global", "account") if s in scopes), "none")


def _from_complaint(complaint: Complaint) -> Classification:
    recipients = [complaint.original_rcpt_to] if complaint.original_rcpt_to else []
    if not complaint.is_complaint:
        evidence = (
            Evidence(
                "complaint",
                f"a '{complaint.feedback_type}' feedback report is about the sender, not a complaint",
            ),
        )
        return Classification(
            "none", complaint.feedback_type, recipients, None, complaint.source, "none", evidence
        )
    evidence = (
        Evidence("complaint", _COMPLAINT_EVIDENCE.get(complaint.source, complaint.source)),
        Evidence("policy", "a complaint suppresses the address on the sending account's list"),
    )
    return Classification(
        "complaint",
        complaint.feedback_type,
        recipients,
        None,
        complaint.source,
        "account",
        evidence,
        complaint=complaint,
    )


_COMPLAINT_EVIDENCE = {
    "arf": "a message/feedback-report part (ARF, RFC 5965)",
    "hotmail": "Hotmail/Outlook.com 'complaint about message from <ip>' with the original attached",
    "ses": "an SES notification with notificationType Complaint",
    "opt-out": "an opt-out request from the recipient (unsubscribe button or reply)",
}


def _notification(notification: dict[str, object], policy: Policy) -> Classification:
    complaint = notifications.complaint(notification)
    if complaint is not None:
        return _from_complaint(complaint)
    return _from_report(notifications.bounce(notification, policy))


def _embedded_notification(msg: Message) -> dict[str, object] | None:
    """An SES notification delivered as mail (an SNS e-mail subscription): the body is the JSON."""
    if msg.is_multipart() or msg.get_content_maintype() != "text":
        return None
    payload = msg.get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload.lstrip().startswith(b"{"):
        return None
    return notifications.load(payload)


def _opt_out(msg: Message) -> Complaint | None:
    """An unsubscribe request mailed back (a provider's unsubscribe button, or a person's one-word reply)."""
    subject = str(msg.get("Subject") or "")
    if _OPT_OUT_SUBJECT.match(subject) is None:
        return None
    sender = re.search(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", str(msg.get("From") or ""))
    return Complaint(
        feedback_type="opt-out",
        user_agent=None,
        version=None,
        original_rcpt_to=sender.group(0) if sender else None,
        original_mail_from=None,
        reported_domain=None,
        arrival_date=None,
        source_ip=None,
        original_message_id=original_message_id(msg),
        feedback_id=None,
        verp_token=verp_token(msg),
        source="opt-out",
    )


__all__ = ["Classification", "Reason", "classify_message"]
