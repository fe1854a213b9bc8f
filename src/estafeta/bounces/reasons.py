"""The vocabulary of delivery failures: why a message failed, what it says of the address, whose fault it is.

Every failure, whether it arrives as a synchronous SMTP reply, a DSN, a home-grown bounce text or a provider's
notification, ends up as one `Verdict`, so delivery, suppression and reputation reason about one small type.
A verdict also carries its `evidence`: the rules and the words or fields that decided it, for `--explain`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    """The suppression question: the address is dead (hard), failed but lives (soft), no failure (none)."""

    HARD = "hard"
    SOFT = "soft"
    NONE = "none"


class Reason(StrEnum):
    USER_UNKNOWN = "user-unknown"
    NO_SUCH_DOMAIN = "no-such-domain"
    HAS_MOVED = "has-moved"
    NOT_ACCEPTING = "not-accepting"
    MAILBOX_DISABLED = "mailbox-disabled"
    MAILBOX_FULL = "mailbox-full"
    MESSAGE_TOO_LARGE = "message-too-large"
    FILTERED = "filtered"
    SENDER_REJECTED = "sender-rejected"
    RELAY_DENIED = "relay-denied"
    AUTHENTICATION = "authentication-failed"
    BLOCKLISTED = "blocklisted"
    SPAM_CONTENT = "spam-content"
    POLICY = "policy-rejection"
    RATE_LIMITED = "rate-limited"
    GREYLISTED = "greylisted"
    SERVER_DOWN = "server-down"
    SYSTEM_ERROR = "system-error"
    DNS_FAILURE = "dns-failure"
    EXPIRED = "expired"
    PROTOCOL = "protocol-error"
    SECURITY = "security"
    DELIVERED = "delivered"
    OUT_OF_OFFICE = "out-of-office"
    OTHER = "other"


# Reasons that say the address (or its whole domain) is gone for good.  Only these make a verdict hard;
# a disabled mailbox joins them when the operator asks for it (`suppression.disabled_mailbox`).
DEAD = frozenset({Reason.USER_UNKNOWN, Reason.NO_SUCH_DOMAIN, Reason.HAS_MOVED, Reason.NOT_ACCEPTING})

# Who caused the failure: the recipient's address or mailbox, the sender (its IP, domain, authentication or
# content: these go to the sender's reputation and review, never to the recipient's suppression), or the
# path between them.
RECIPIENT, SENDER, NETWORK = "recipient", "sender", "network"
REASON_BLAME: dict[Reason, str] = {
    Reason.USER_UNKNOWN: RECIPIENT,
    Reason.NO_SUCH_DOMAIN: RECIPIENT,
    Reason.HAS_MOVED: RECIPIENT,
    Reason.NOT_ACCEPTING: RECIPIENT,
    Reason.MAILBOX_DISABLED: RECIPIENT,
    Reason.MAILBOX_FULL: RECIPIENT,
    Reason.FILTERED: RECIPIENT,
    Reason.MESSAGE_TOO_LARGE: SENDER,
    Reason.SENDER_REJECTED: SENDER,
    Reason.RELAY_DENIED: SENDER,
    Reason.AUTHENTICATION: SENDER,
    Reason.BLOCKLISTED: SENDER,
    Reason.SPAM_CONTENT: SENDER,
    Reason.POLICY: SENDER,
    Reason.RATE_LIMITED: SENDER,
    Reason.PROTOCOL: SENDER,
    Reason.GREYLISTED: NETWORK,
    Reason.SERVER_DOWN: NETWORK,
    Reason.SYSTEM_ERROR: NETWORK,
    Reason.DNS_FAILURE: NETWORK,
    Reason.EXPIRED: NETWORK,
    Reason.SECURITY: NETWORK,
    Reason.OTHER: NETWORK,
}

# Permanent (5xx) refusals that a later attempt of the same message will not get past.  Other permanent
# refusals (a full mailbox, a blocklisting, a filter that may change its mind) are still retried until
# `delivery.max_age`, as they always were.
NOT_RETRIED = frozenset(
    DEAD
    | {
        Reason.MAILBOX_DISABLED,
        Reason.FILTERED,
        Reason.SENDER_REJECTED,
        Reason.RELAY_DENIED,
        Reason.AUTHENTICATION,
        Reason.SPAM_CONTENT,
        Reason.OTHER,
    }
)

REASON_DETAIL: dict[Reason, str] = {
    Reason.USER_UNKNOWN: "the recipient address does not exist",
    Reason.NO_SUCH_DOMAIN: "the recipient domain does not exist or has no mail server",
    Reason.HAS_MOVED: "the mailbox has moved and mail is no longer accepted for it",
    Reason.NOT_ACCEPTING: "the recipient domain accepts no mail at all (null MX)",
    Reason.MAILBOX_DISABLED: "the recipient mailbox is disabled or suspended",
    Reason.MAILBOX_FULL: "the recipient mailbox is full",
    Reason.MESSAGE_TOO_LARGE: "the message is larger than the receiver accepts",
    Reason.FILTERED: "a filter at the recipient refused the message",
    Reason.SENDER_REJECTED: "the receiver refused the sender, not the recipient",
    Reason.RELAY_DENIED: "the receiving server does not handle mail for this domain",
    Reason.AUTHENTICATION: "the message failed the receiver's sender checks (SPF, DKIM, DMARC, PTR)",
    Reason.BLOCKLISTED: "the sending IP or domain is on a blocklist",
    Reason.SPAM_CONTENT: "the message was refused as spam, bulk mail or malware",
    Reason.POLICY: "the receiver's policy refused the message",
    Reason.RATE_LIMITED: "the receiver is limiting the sending rate",
    Reason.GREYLISTED: "the receiver greylisted the message; a later retry passes",
    Reason.SERVER_DOWN: "the receiving server could not be reached or failed",
    Reason.SYSTEM_ERROR: "the receiving system failed (mail loop, local error, misconfiguration)",
    Reason.DNS_FAILURE: "a DNS lookup for the recipient domain failed temporarily",
    Reason.EXPIRED: "delivery was given up after retrying for too long",
    Reason.PROTOCOL: "the receiver refused the message format or SMTP dialogue",
    Reason.SECURITY: "a transport security requirement was not met",
    Reason.DELIVERED: "the report says the message was delivered or relayed",
    Reason.OUT_OF_OFFICE: "an automatic reply, not a delivery failure",
    Reason.OTHER: "an unclassified delivery failure",
}


@dataclass(frozen=True)
class Evidence:
    """One step of a decision: which rule fired and on which words or fields."""

    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: Reason
    status: str | None  # enhanced status code (RFC 3463), e.g. "5.1.1"
    code: int | None  # basic SMTP reply code, e.g. 550
    detail: str  # short human explanation
    permanent: bool = False  # a 5xx refusal: this message will not get through by retrying
    stage: str | None = None  # the SMTP command refused: mail, rcpt or data, when known
    scope: str = "none"  # what it suppresses: global, account or none
    evidence: tuple[Evidence, ...] = field(default=(), compare=False)

    @property
    def blame(self) -> str:
        return REASON_BLAME.get(self.reason, NETWORK)


def retry_advised(verdict: Verdict) -> bool:
    """Retry soft failures, except permanent refusals that a later attempt cannot get past."""
    if verdict.kind is not Kind.SOFT:
        return False
    return not (verdict.permanent and verdict.reason in NOT_RETRIED)


def bounce_data(verdict: Verdict) -> dict[str, str | None]:
    """The verdict as an event records it (`data.bounce`): what failed, what it suppresses, whose fault."""
    data: dict[str, str | None] = {
        "kind": str(verdict.kind),
        "reason": str(verdict.reason),
        "status": verdict.status,
        "scope": verdict.scope,
        "blame": verdict.blame,
    }
    if verdict.stage is not None:
        data["stage"] = verdict.stage
    return data
