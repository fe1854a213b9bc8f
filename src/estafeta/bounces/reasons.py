"""The vocabulary of delivery failures: why a message failed and what that means for the next attempt.

Every failure, whether it arrives as a synchronous SMTP reply, a DSN or a home-grown bounce text, ends up
as one `Verdict`, so delivery, suppression and reputation reason about a single small type.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """What to do next: never retry and suppress (hard), retry (soft), or nothing failed (none)."""

    HARD = "hard"
    SOFT = "soft"
    NONE = "none"


class Reason(StrEnum):
    USER_UNKNOWN = "user-unknown"
    NO_SUCH_DOMAIN = "no-such-domain"
    MAILBOX_FULL = "mailbox-full"
    MESSAGE_TOO_LARGE = "message-too-large"
    SERVER_DOWN = "server-down"
    POLICY = "policy-rejection"
    BLOCKLISTED = "blocklisted"
    SPAM_CONTENT = "spam-content"
    RATE_LIMITED = "rate-limited"
    GREYLISTED = "greylisted"
    EXPIRED = "expired"
    MAILBOX_DISABLED = "mailbox-disabled"
    RELAY_DENIED = "relay-denied"
    AUTHENTICATION = "authentication-failed"
    DNS_FAILURE = "dns-failure"
    PROTOCOL = "protocol-error"
    SECURITY = "security"
    OUT_OF_OFFICE = "out-of-office"
    OTHER = "other"


# What each reason means for the recipient when nothing transient was signalled.  OTHER is absent on
# purpose: its kind follows the reply class (5 → hard, 4 → soft).
REASON_KIND: dict[Reason, Kind] = {
    Reason.USER_UNKNOWN: Kind.HARD,
    Reason.NO_SUCH_DOMAIN: Kind.HARD,
    Reason.MAILBOX_DISABLED: Kind.HARD,
    Reason.RELAY_DENIED: Kind.HARD,
    Reason.SPAM_CONTENT: Kind.HARD,
    Reason.AUTHENTICATION: Kind.HARD,
    Reason.MAILBOX_FULL: Kind.SOFT,
    Reason.MESSAGE_TOO_LARGE: Kind.SOFT,
    Reason.SERVER_DOWN: Kind.SOFT,
    Reason.POLICY: Kind.SOFT,
    Reason.BLOCKLISTED: Kind.SOFT,
    Reason.RATE_LIMITED: Kind.SOFT,
    Reason.GREYLISTED: Kind.SOFT,
    Reason.EXPIRED: Kind.SOFT,
    Reason.DNS_FAILURE: Kind.SOFT,
    Reason.PROTOCOL: Kind.SOFT,
    Reason.SECURITY: Kind.SOFT,
    Reason.OUT_OF_OFFICE: Kind.NONE,
}

REASON_DETAIL: dict[Reason, str] = {
    Reason.USER_UNKNOWN: "the recipient address does not exist",
    Reason.NO_SUCH_DOMAIN: "the recipient domain does not exist or accepts no mail",
    Reason.MAILBOX_FULL: "the recipient mailbox is full",
    Reason.MESSAGE_TOO_LARGE: "the message is larger than the receiver accepts",
    Reason.SERVER_DOWN: "the receiving server could not be reached or failed",
    Reason.POLICY: "the receiver's policy or filter refused the message",
    Reason.BLOCKLISTED: "the sending IP or domain is on a blocklist",
    Reason.SPAM_CONTENT: "the message was refused as spam or malware",
    Reason.RATE_LIMITED: "the receiver is limiting the sending rate",
    Reason.GREYLISTED: "the receiver greylisted the message; a later retry passes",
    Reason.EXPIRED: "delivery was given up after retrying for too long",
    Reason.MAILBOX_DISABLED: "the recipient mailbox is disabled or abandoned",
    Reason.RELAY_DENIED: "the receiver does not handle mail for this address",
    Reason.AUTHENTICATION: "the message failed the receiver's sender authentication",
    Reason.DNS_FAILURE: "a DNS lookup for the recipient domain failed temporarily",
    Reason.PROTOCOL: "the receiver refused the message format or SMTP dialogue",
    Reason.SECURITY: "a transport security requirement was not met",
    Reason.OUT_OF_OFFICE: "an automatic reply, not a delivery failure",
    Reason.OTHER: "an unclassified delivery failure",
}


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: Reason
    status: str | None  # enhanced status code (RFC 3463), e.g. "5.1.1"
    code: int | None  # basic SMTP reply code, e.g. 550
    detail: str  # short human explanation


def retry_advised(verdict: Verdict) -> bool:
    """Only soft failures are worth another attempt; hard ones repeat and `none` needs no retry."""
    return verdict.kind is Kind.SOFT
