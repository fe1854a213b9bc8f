"""Bounce and complaint classification: SMTP replies, DSNs, free-form bounces, complaints, notifications."""

from estafeta.bounces.arf import Complaint, parse_complaint
from estafeta.bounces.classify import classify_failure, classify_reply
from estafeta.bounces.dsn import BounceReport, RecipientFailure, parse_bounce
from estafeta.bounces.engine import Classification, classify_message
from estafeta.bounces.policy import Policy
from estafeta.bounces.reasons import Evidence, Kind, Reason, Verdict, retry_advised

__all__ = [
    "BounceReport",
    "Classification",
    "Complaint",
    "Evidence",
    "Kind",
    "Policy",
    "Reason",
    "RecipientFailure",
    "Verdict",
    "classify_failure",
    "classify_message",
    "classify_reply",
    "parse_bounce",
    "parse_complaint",
    "retry_advised",
]
