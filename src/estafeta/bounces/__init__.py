"""Bounce and complaint classification: SMTP replies, DSNs, free-form bounces and ARF complaints."""

from estafeta.bounces.arf import Complaint, parse_complaint
from estafeta.bounces.classify import classify_failure, classify_reply
from estafeta.bounces.dsn import BounceReport, RecipientFailure, parse_bounce
from estafeta.bounces.reasons import Kind, Reason, Verdict, retry_advised

__all__ = [
    "BounceReport",
    "Complaint",
    "Kind",
    "Reason",
    "RecipientFailure",
    "Verdict",
    "classify_failure",
    "classify_reply",
    "parse_bounce",
    "parse_complaint",
    "retry_advised",
]
