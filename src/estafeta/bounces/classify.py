"""Turn an SMTP reply, or the diagnostic text of a bounce, into a hard/soft verdict with a reason.

The reason is decided in this order:

1. an enhanced status code (RFC 3463, ``class.subject.detail``) whose meaning is specific, e.g. 5.1.1;
2. the reply text, matched against the wording of real servers (Gmail, Yahoo, Outlook, Postfix, Exim,
   qmail, Exchange, blocklists …), for codes that are generic (x.y.0) or overloaded (x.7.1, x.4.1);
3. the subject of the enhanced code (x.4.x network, x.5.x protocol, x.7.x policy …);
4. otherwise ``other``.

Then the kind:

=====================  ====  ================================================================
reason                 kind  typical evidence
=====================  ====  ================================================================
user-unknown           hard  5.1.1, "User unknown", "does not exist", "doesn't have a … account"
no-such-domain         hard  5.1.2, 5.1.10, 5.4.4, "Host or domain name not found", NXDOMAIN
mailbox-disabled       hard  5.2.1, 5.7.13, "account has been disabled", "not been collected"
relay-denied           hard  "Relay access denied", "Unable to relay"
spam-content           hard  "5.7.1 … spam", "unsolicited", virus/malware
authentication-failed  hard  5.7.8, 5.7.20 to 5.7.27 (5.7.26 unauthenticated), SPF/DKIM/DMARC
mailbox-full           soft  5.2.2 / 4.2.2, "Mailbox full", "Over quota" — even as a 5xx
message-too-large      soft  5.2.3, 5.3.4, "message size exceeds"
server-down            soft  no reply at all, 4.4.1, "Connection refused", "Command died"
dns-failure            soft  4.4.3, "Host not found, try again"
rate-limited           soft  4.7.28, "[TSS04] … temporarily deferred", "too many connections"
greylisted             soft  "Greylisted"
blocklisted            soft  Spamhaus/SpamCop listings, Outlook S3150
policy-rejection       soft  other x.7.x and filter refusals that may pass later
expired                soft  4.4.7, "retry timeout exceeded", "Exceeded Maximum Delivery Attempts"
protocol-error         soft  x.5.x, x.6.x, malformed header — a fault of the message, not the address
security               soft  x.7.10 (TLS required) and other transport-security refusals
other                  5xx → hard, 4xx → soft (a bounce report without any code counts as 5xx)
=====================  ====  ================================================================

No reply at all (connection refused, timeout, TLS failure) is ``server-down``, soft; a text that says
the domain does not resolve (NXDOMAIN) makes it ``no-such-domain``, hard, and a temporary DNS failure
``dns-failure``, soft.

Any transient signal — a 4xx reply code, a 4.x.x enhanced code, a delayed DSN — makes the verdict soft
whatever the reason: the receiver asked for a retry, so the address must not be suppressed yet.  When
the basic code and the enhanced code disagree in class (``450 5.1.1``, ``550 4.2.2``), this rule reads
the disagreement as "transient".
"""

from __future__ import annotations

import re

from estafeta.bounces.reasons import REASON_DETAIL, REASON_KIND, Kind, Reason, Verdict

# Enhanced codes whose meaning is specific, keyed by "subject.detail", or by the full code where the
# class changes the meaning.  Codes that are missing here (x.y.0, x.4.1, x.4.4, x.7.1 …) are generic or
# overloaded, so the wording decides.
_STATUS_REASONS: dict[str, Reason] = {
    "1.1": Reason.USER_UNKNOWN,
    "1.2": Reason.NO_SUCH_DOMAIN,
    "1.3": Reason.USER_UNKNOWN,
    "1.4": Reason.USER_UNKNOWN,
    "1.6": Reason.MAILBOX_DISABLED,
    "1.7": Reason.POLICY,
    "1.8": Reason.POLICY,
    "1.10": Reason.NO_SUCH_DOMAIN,
    "2.1": Reason.MAILBOX_DISABLED,
    "2.2": Reason.MAILBOX_FULL,
    "2.3": Reason.MESSAGE_TOO_LARGE,
    "2.4": Reason.OTHER,
    "3.1": Reason.SERVER_DOWN,
    "3.2": Reason.SERVER_DOWN,
    "3.3": Reason.PROTOCOL,
    "3.4": Reason.MESSAGE_TOO_LARGE,
    "3.5": Reason.SERVER_DOWN,
    "4.2": Reason.SERVER_DOWN,
    "4.3": Reason.DNS_FAILURE,
    "5.4.4": Reason.NO_SUCH_DOMAIN,
    "4.5": Reason.SERVER_DOWN,
    "4.6": Reason.OTHER,
    "4.7": Reason.EXPIRED,
    **{f"5.{detail}": Reason.PROTOCOL for detail in range(1, 7)},
    **{f"6.{detail}": Reason.PROTOCOL for detail in range(1, 11)},
    "7.2": Reason.POLICY,
    **{f"7.{detail}": Reason.SECURITY for detail in (3, 4, 5, 6, 7, 9, 10, 11, 12, 19, 30)},
    "7.8": Reason.AUTHENTICATION,
    "7.13": Reason.MAILBOX_DISABLED,
    "7.14": Reason.POLICY,
    "7.15": Reason.POLICY,
    "7.16": Reason.MESSAGE_TOO_LARGE,
    "7.17": Reason.MAILBOX_DISABLED,
    "7.18": Reason.MAILBOX_DISABLED,
    **{f"7.{detail}": Reason.AUTHENTICATION for detail in range(20, 28)},
    "7.28": Reason.RATE_LIMITED,
    "7.29": Reason.AUTHENTICATION,
}

# When the wording names no reason, the subject of the enhanced code still says which area failed.
_SUBJECT_REASONS: dict[str, Reason] = {
    "4": Reason.SERVER_DOWN,
    "5": Reason.PROTOCOL,
    "6": Reason.PROTOCOL,
    "7": Reason.POLICY,
}


def _any_of(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(alternatives), re.I)


# The wording of real servers, in priority order: the first reason whose pattern matches anywhere wins.
# Texts are matched with their whitespace collapsed, so a phrase may span the lines of a bounce.
_TEXT_REASONS: list[tuple[Reason, re.Pattern[str]]] = [
    (Reason.GREYLISTED, _any_of(r"gr[ae]y[- ]?list")),
    (
        Reason.RATE_LIMITED,
        _any_of(
            r"rate[- ]limit",
            r"unusual rate",
            r"too many (?:messages|mails?|e-?mails|connections|sessions|concurrent)",
            r"throttl",
            r"temporarily deferred",
            r"\[tss?\d\d\]",
            r"sending (?:rate|quota|limit)",
            r"(?:daily|hourly)\b[^.]{0,30}\b(?:quota|limit)",
            r"exceeded\b[^.]{0,20}\brate",
        ),
    ),
    (
        Reason.BLOCKLISTED,
        _any_of(
            r"spamhaus|spamcop|barracuda|\bsorbs\b|\bs31[45]0\b|\bdnsbl\b|\brbl\b",
            r"block ?list|black ?list|blocked using",
            r"(?:is|are|been|currently) listed (?:at|on|in|by)",
            r"reputation",
        ),
    ),
    (
        Reason.AUTHENTICATION,
        _any_of(
            r"unauthenticated|not authenticated",
            r"authentication (?:failed|failure|required|credentials|checks)",
            r"\bspf\b|\bdkim\b|\bdmarc\b|sender policy framework",
            r"\bptr record|reverse dns",
            r"sender address rejected|sender verif",
        ),
    ),
    (
        Reason.SPAM_CONTENT,
        _any_of(
            r"\bspam\b|unsolicited|\bjunk\b",
            r"\bvirus(?:es)?\b|malware|infected|phish|trojan|harmful",
            r"potential security issue|suspicious (?:content|link|attachment)",
        ),
    ),
    (
        Reason.RELAY_DENIED,
        _any_of(
            r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited|refused|disallowed|not allowed)",
            r"unable to relay|cannot relay|(?:we )?do not relay|no relaying",
            r"(?:not|never) (?:permitted|allowed|authori[sz]ed) to relay",
        ),
    ),
    (
        Reason.MAILBOX_FULL,
        _any_of(
            r"quota",
            r"mailbox (?:is )?full|full mailbox",
            r"(?:mail ?box|mail ?folder|inbox|mail ?store) (?:is )?(?:full|over)",
            r"(?:disk|storage|mailbox) space|box space not enough|too much mail",
            r"insufficient (?:disk )?(?:space|storage)|out of (?:storage|disk space)",
            r"not (?:have )?enough (?:disk |storage )?space",
            r"(?:storage|mailbox) (?:limit|size)",
            r"exceed(?:s|ed|ing)? (?:their |the |its )?(?:storage|mailbox|disk)",
        ),
    ),
    (
        Reason.MESSAGE_TOO_LARGE,
        _any_of(
            r"too (?:large|big)|message is larger",
            r"message size|size (?:limit|exceed)|message length exceeds",
            r"maximum (?:allowed |incoming |inbound )?(?:message )?size",
            r"exceed(?:s|ed)? (?:the )?(?:maximum|max)\b[^.]{0,30}\bsize",
        ),
    ),
    (
        Reason.MAILBOX_DISABLED,
        _any_of(
            r"\b(?:account|mailbox|user|address)\b[^.;:]{0,40}\b(?:disabled|discontinued|deactivated"
            r"|inactive|suspended|closed|terminated|frozen|locked|dormant|expired)",
            r"not been collected|has moved",
            r"no longer (?:active|in use|valid|available|exists?)",
        ),
    ),
    (
        Reason.DNS_FAILURE,
        _any_of(
            r"not found, try again|servfail",
            r"dns (?:error|failure|lookup fail|timeout|timed out|temporar)",
            r"temporary (?:dns|lookup|resolution)|lookup (?:failure|failed|timed out)",
        ),
    ),
    (
        Reason.NO_SUCH_DOMAIN,
        _any_of(
            r"unknown host|host unknown|unknown domain|no such (?:domain|host)",
            r"host (?:or domain name )?not found",
            r"(?:domain|host) (?:name )?(?:does not exist|doesn'?t exist|not found|unknown|is not valid)",
            r"unrouteable mail domain|nxdomain|no (?:mx|mail exchanger)|null mx",
        ),
    ),
    (
        Reason.USER_UNKNOWN,
        _any_of(
            r"user unknown|unknown (?:local[- ]part|user|recipient|address|mailbox|addressee)",
            r"\b(?:recipient|address|mailbox|addressee|account) unknown|unknown or illegal (?:user|alias)",
            r"non-?existent (?:user|recipient|mailbox|address|account)",
            r"no such (?:user|mailbox|recipient|address|account|person|local user)|no mailbox",
            r"mailbox (?:unavailable|not found|does not exist|doesn'?t exist|not available|unknown|invalid)",
            r"invalid (?:recipient|mailbox|address|user|final delivery|e-?mail)",
            r"\b(?:user|recipient|mailbox|account|address|addressee)\b[^.;:]{0,30}"
            r"\b(?:does not exist|doesn'?t exist|not found|not known|not recognized|is unknown|not valid)",
            r"(?:address|name)\b[^.;:]{0,30}\b(?:ambiguous|not unique)",
            r"recipient name is not recognized|not listed in|bad destination (?:mailbox|address)",
            r"(?:doesn'?t|does not) have an? [\w.-]+ account",
            r"not an? (?:valid|known) (?:user|recipient|mailbox|address)|not a valid user",
            r"unrouteable address|no matches to (?:nameserver|directory)|did not (?:exactly )?match",
            r"does not have a final (?:e-?mail )?delivery point|not (?:\w+ )?e-?mail users?",
            r"access denied\. as\(\d+\)",  # Microsoft 365 directory-based edge blocking
            r"(?:address|recipient) (?:is )?(?:wrong|incorrect)|wrong (?:e-?mail )?address",
            r"n'existe pas|unbekannt|existiert nicht|no existe|inexistente|non esiste|sconosciuto",
        ),
    ),
    (
        Reason.SERVER_DOWN,
        _any_of(
            r"connection (?:was )?(?:refused|timed out|reset|lost|failed|dropped|closed)",
            r"dropped by remote host|unavailable to take delivery|connection to mail exchanger",
            r"(?:can'?t|cannot|could not|couldn'?t|unable to|wasn'?t able to|failed to) "
            r"(?:connect|establish|reach)",
            r"not responding|no answer|did not respond|not reachable|unreachable",
            r"server (?:is )?(?:busy|unavailable|down|error)|service (?:temporarily )?unavailable",
            r"temporar(?:il)?y (?:unavailable|failure|error|local problem)",
            r"command died|local (?:configuration|delivery) (?:error|problem)|internal (?:server )?error",
            r"system (?:error|failure)|insufficient system resources",
        ),
    ),
    (
        Reason.EXPIRED,
        _any_of(
            r"expired|timed? ?out|too long|aborted after",
            r"maximum[- ](?:delivery )?(?:attempts|time)|retry time(?:out)? (?:exceeded|reached)",
            r"delivery failed \d+ attempts|after \d+ (?:delivery )?attempt|not delivered within",
        ),
    ),
    (Reason.SECURITY, _any_of(r"\btls\b|starttls|\bssl\b|certificate|encrypt")),
    (
        Reason.PROTOCOL,
        _any_of(
            r"\bno [\w-]+ (?:header|field)\b|missing\b[^.]{0,30}\b(?:header|field)",
            r"(?:malformed|invalid|illegal|duplicate)\b[^.]{0,20}\b(?:header|message|syntax|command)",
            r"syntax error|command (?:not recognized|unrecognized)|line too long|bare (?:lf|linefeed)",
        ),
    ),
    (
        Reason.POLICY,
        _any_of(
            r"polic(?:y|ies)|prohibit|forbidden|administrative|content filter",
            r"not (?:accepting|accepted|allowed|permitted|authori[sz]ed)|refused|rejected|denied|blocked",
        ),
    ),
]

# A reply with no code at all: the text tells a dead server from a domain that does not exist.
_NO_REPLY_REASONS: list[tuple[Reason, re.Pattern[str]]] = [
    (r, p) for r, p in _TEXT_REASONS if r in (Reason.DNS_FAILURE, Reason.NO_SUCH_DOMAIN)
]

# Words that mark a failure as temporary when neither a basic nor an enhanced code says so.
_TRANSIENT_HINT = re.compile(
    r"try again later|please try (?:to resend|again later)|resend (?:this|the|your) message"
    r"|will be retried|temporar(?:y|ily)",
    re.I,
)

_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_ENHANCED_AT_START = re.compile(r"^\s*(?:[2-5]\d\d[\s-]+)?#?([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
# Anywhere in free text, an enhanced code must follow a basic code, '#', '(' or ':' or open a line, so
# that software versions ("Exim 4.69", "8.9.3") and IP addresses are not mistaken for one.
_ENHANCED_IN_TEXT = re.compile(
    r"(?:^|[45]\d\d[ -]|[#(:]\s?|status:?\s)\s*([45])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)", re.I | re.M
)
_CODE_AT_START = re.compile(r"^\s*([2-5]\d\d)(?=[\s-]|$)")
_CODE_IN_TEXT = re.compile(
    r"(?:^|said:|replied:|returned:|response:|error:|\[smtp error code)\s*([45][0-5]\d)(?=[\s\-:\]]|$)",
    re.I | re.M,
)
# "550-5.1.1 " at the start of each line of a multi-line reply, dropped from the summary.
_LINE_PREFIX = re.compile(r"^\s*[2-5]\d\d[ -](?:[245]\.\d{1,3}\.\d{1,3}\s+)?", re.M)


def parse_status(text: str) -> str | None:
    """The enhanced status code that opens a reply, e.g. "5.1.1" in "550-5.1.1 The email account …"."""
    match = _ENHANCED_AT_START.match(text)
    return ".".join(match.groups()) if match else None


def find_status(text: str) -> str | None:
    """The first failure enhanced status code (class 4 or 5) anywhere in a bounce's free text."""
    match = _ENHANCED_IN_TEXT.search(text)
    return ".".join(match.groups()) if match else None


def find_reply_code(text: str) -> int | None:
    """The first SMTP failure reply code quoted in a bounce's free text ("… said: 550 …")."""
    match = _CODE_AT_START.match(text) or _CODE_IN_TEXT.search(text)
    if match is None:
        return None
    code = int(match.group(1))
    return code if code >= 400 else None


def _reason_from_text(text: str) -> Reason | None:
    for reason, pattern in _TEXT_REASONS:
        if pattern.search(text):
            return reason
    return None


def classify_reply(code: int | None, text: str) -> Verdict:
    """Classify the final reply of one SMTP transaction; code None means no reply came at all."""
    if code is None:
        reason = next((r for r, p in _NO_REPLY_REASONS if p.search(text)), Reason.SERVER_DOWN)
        return _verdict(REASON_KIND[reason], reason, None, None, text)
    if 200 <= code < 300:
        return Verdict(Kind.NONE, Reason.OTHER, parse_status(text), code, "accepted")
    if not 400 <= code < 600:
        return _verdict(Kind.SOFT, Reason.PROTOCOL, None, code, text)
    return _judge(text, code=code, status=parse_status(text))


def classify_failure(
    text: str, *, code: int | None = None, status: str | None = None, transient: bool = False
) -> Verdict:
    """Classify a failure reported after the fact (a DSN field, a bounce text).

    A bounce is a final report, so without any class information it counts as permanent unless its
    words (or the caller, for a delayed DSN) say the sender will retry.
    """
    code = code if code is not None else find_reply_code(text)
    status = status if status is not None and _STATUS.fullmatch(status) else find_status(text)
    if code is None and status is None and _TRANSIENT_HINT.search(text):
        transient = True
    return _judge(text, code=code, status=status, transient=transient, permanent_default=True)


def _judge(
    text: str,
    *,
    code: int | None,
    status: str | None,
    transient: bool = False,
    permanent_default: bool = False,
) -> Verdict:
    """Combine code, enhanced status and wording into a verdict (the rules of the module docstring)."""
    reason = _reason(status, " ".join(text.split()))
    status_class = status[0] if status else None
    code_class = str(code)[0] if code is not None else None
    if transient or "4" in (code_class, status_class):
        kind = Kind.SOFT
    elif reason in REASON_KIND:
        kind = REASON_KIND[reason]
    elif "5" in (code_class, status_class) or permanent_default:
        kind = Kind.HARD
    else:
        kind = Kind.SOFT
    return _verdict(kind, reason, status, code, text)


def _reason(status: str | None, text: str) -> Reason:
    if status is not None:
        subject_detail = status.split(".", 1)[1]
        specific = _STATUS_REASONS.get(status) or _STATUS_REASONS.get(subject_detail)
        if specific is not None:
            return specific
    named = _reason_from_text(text)
    if named is not None:
        return named
    if status is not None:
        return _SUBJECT_REASONS.get(status.split(".")[1], Reason.OTHER)
    return Reason.OTHER


def _verdict(kind: Kind, reason: Reason, status: str | None, code: int | None, text: str) -> Verdict:
    said = " ".join(_LINE_PREFIX.sub("", text).split())
    detail = REASON_DETAIL[reason]
    if said:
        detail = f"{detail}: {said[:80]}{'…' if len(said) > 80 else ''}"
    return Verdict(kind=kind, reason=reason, status=status, code=code, detail=detail)
