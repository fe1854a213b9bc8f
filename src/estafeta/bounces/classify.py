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
authentication-failed  hard  5.7.8, 5.7.20–5.7.27 (5.7.26 unauthenticated), SPF/DKIM/DMARC
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

Any transient signal — a 4xx reply code, a 4.x.x enhanced code, a delayed DSN — makes the verdict soft
whatever the reason: the receiver asked for a retry, so the address must not be suppressed yet.  When
the basic code and the enhanced code disagree in class (``450 5.1.1``, ``550 4.2.2``), this rule reads
the disagreement as "transient".
"""

from __future__ import annotations

import re

from estafeta.bounces.reasons import REASON_DETAIL, REASON_KIND, Kind, Reason, Verdict

# Specific enhanced codes, keyed by "subject.detail" or by the full code when the class matters.
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
    "5.1": Reason.PROTOCOL,
    "5.2": Reason.PROTOCOL,
    "5.3": Reason.PROTOCOL,
    "5.4": Reason.PROTOCOL,
    "5.5": Reason.PROTOCOL,
    "5.6": Reason.PROTOCOL,
    "6.1": Reason.PROTOCOL,
    "6.2": Reason.PROTOCOL,
    "6.3": Reason.PROTOCOL,
    "6.4": Reason.PROTOCOL,
    "6.5": Reason.PROTOCOL,
    "6.6": Reason.PROTOCOL,
    "6.7": Reason.PROTOCOL,
    "6.8": Reason.PROTOCOL,
    "6.9": Reason.PROTOCOL,
    "6.10": Reason.PROTOCOL,
    "7.2": Reason.POLICY,
    "7.3": Reason.SECURITY,
    "7.4": Reason.SECURITY,
    "7.5": Reason.SECURITY,
    "7.6": Reason.SECURITY,
    "7.7": Reason.SECURITY,
    "7.8": Reason.AUTHENTICATION,
    "7.9": Reason.SECURITY,
    "7.10": Reason.SECURITY,
    "7.11": Reason.SECURITY,
    "7.12": Reason.SECURITY,
    "7.13": Reason.MAILBOX_DISABLED,
    "7.14": Reason.POLICY,
    "7.15": Reason.POLICY,
    "7.16": Reason.MESSAGE_TOO_LARGE,
    "7.17": Reason.MAILBOX_DISABLED,
    "7.18": Reason.MAILBOX_DISABLED,
    "7.19": Reason.SECURITY,
    "7.20": Reason.AUTHENTICATION,
    "7.21": Reason.AUTHENTICATION,
    "7.22": Reason.AUTHENTICATION,
    "7.23": Reason.AUTHENTICATION,
    "7.24": Reason.AUTHENTICATION,
    "7.25": Reason.AUTHENTICATION,
    "7.26": Reason.AUTHENTICATION,
    "7.27": Reason.AUTHENTICATION,
    "7.28": Reason.RATE_LIMITED,
    "7.29": Reason.AUTHENTICATION,
    "7.30": Reason.SECURITY,
}

# When the text names no reason, the subject of the enhanced code still says which area failed.
_SUBJECT_REASONS: dict[str, Reason] = {
    "4": Reason.SERVER_DOWN,
    "5": Reason.PROTOCOL,
    "6": Reason.PROTOCOL,
    "7": Reason.POLICY,
}


def _words(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.I)


# Wording of real servers, most specific first: the first pattern that matches anywhere wins.
_TEXT_REASONS: list[tuple[Reason, re.Pattern[str]]] = [
    (Reason.GREYLISTED, _words(r"gr[ae]y[- ]?list")),
    (
        Reason.RATE_LIMITED,
        _words(
            r"rate[- ]limit|unusual rate|too many (?:messages|mails?|e-?mails|connections|sessions|concurrent)"
            r"|throttl|temporarily deferred|\[ts\d\d\]|\[tss\d\d\]|sending (?:rate|quota|limit)"
            r"|(?:daily|hourly)\b[^.\n]{0,30}\b(?:quota|limit)|exceeded\b[^.\n]{0,20}\brate"
        ),
    ),
    (
        Reason.BLOCKLISTED,
        _words(
            r"spamhaus|spamcop|barracuda|\bsorbs\b|\bs3150\b|\bs3140\b|\bdnsbl\b|\brbl\b|block ?list"
            r"|black ?list|blocked using|(?:is|are|been|currently) listed (?:at|on|in|by)|reputation"
        ),
    ),
    (
        Reason.AUTHENTICATION,
        _words(
            r"unauthenticated|not authenticated|authentication (?:failed|failure|required|credentials|checks)"
            r"|\bspf\b|\bdkim\b|\bdmarc\b|sender policy framework|\bptr record|reverse dns"
            r"|sender address rejected|sender verif"
        ),
    ),
    (
        Reason.SPAM_CONTENT,
        _words(
            r"\bspam\b|unsolicited|\bjunk\b|\bvirus(?:es)?\b|malware|infected|phish|trojan|harmful"
            r"|potential security issue|suspicious (?:content|link|attachment)"
        ),
    ),
    (
        Reason.RELAY_DENIED,
        _words(
            r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited|refused|disallowed|not allowed)"
            r"|unable to relay|cannot relay|(?:not|never) (?:permitted|allowed|authori[sz]ed) to relay"
            r"|(?:we )?do not relay|no relaying"
        ),
    ),
    (
        Reason.MAILBOX_FULL,
        _words(
            r"quota|mailbox (?:is )?full|(?:mail ?box|mail ?folder|inbox|mail ?store) (?:is )?(?:full|over)"
            r"|full mailbox|(?:disk|storage|mailbox) space|box space not enough|insufficient storage"
            r"|out of (?:storage|disk space)|too much mail|(?:storage|mailbox) (?:limit|size)"
            r"|not (?:have )?enough (?:disk |storage )?space|insufficient (?:disk )?space"
            r"|exceed(?:s|ed|ing)? (?:their |the |its )?(?:storage|mailbox|disk)"
        ),
    ),
    (
        Reason.MESSAGE_TOO_LARGE,
        _words(
            r"too (?:large|big)|message size|size (?:limit|exceed)|message length exceeds|message is larger"
            r"|maximum (?:allowed |incoming |inbound )?(?:message )?size"
            r"|exceed(?:s|ed)? (?:the )?(?:maximum|max)\b[^.\n]{0,30}\bsize"
        ),
    ),
    (
        Reason.MAILBOX_DISABLED,
        _words(
            r"\b(?:account|mailbox|user|address)\b[^.;:\n]{0,40}\b(?:disabled|discontinued|deactivated"
            r"|inactive|suspended|closed|terminated|frozen|locked|dormant|expired)"
            r"|not been collected|no longer (?:active|in use|valid|available|exists?)|has moved"
        ),
    ),
    (
        Reason.DNS_FAILURE,
        _words(
            r"not found, try again|dns (?:error|failure|lookup fail|timeout|timed out|temporar)|servfail"
            r"|temporary (?:dns|lookup|resolution)|lookup (?:failure|failed|timed out)"
        ),
    ),
    (
        Reason.NO_SUCH_DOMAIN,
        _words(
            r"unknown host|host unknown|host (?:or domain name )?not found|no such (?:domain|host)"
            r"|(?:domain|host) (?:name )?(?:does not exist|doesn'?t exist|not found|unknown|is not valid)"
            r"|unrouteable mail domain|nxdomain|no (?:mx|mail exchanger)|null mx|unknown domain"
        ),
    ),
    (
        Reason.USER_UNKNOWN,
        _words(
            r"user unknown|unknown (?:local[- ]part|user|recipient|address|mailbox|addressee)"
            r"|\b(?:recipient|address|mailbox|addressee|account) unknown|non-?existent (?:user|recipient|mailbox|address|account)"
            r"|(?:address|name)\b[^.;:\n]{0,30}\b(?:ambiguous|not unique)"
            r"|addressee unknown|unknown or illegal (?:user|alias)"
            r"|no such (?:user|mailbox|recipient|address|account|person|local user)|no mailbox"
            r"|mailbox (?:unavailable|not found|does not exist|doesn'?t exist|not available|unknown|invalid)"
            r"|invalid (?:recipient|mailbox|address|user|final delivery|e-?mail)"
            r"|\b(?:user|recipient|mailbox|account|address|addressee)\b[^.;:\n]{0,30}"
            r"\b(?:does not exist|doesn'?t exist|not found|not known|not recognized|is unknown|not valid)"
            r"|recipient name is not recognized|not listed in|(?:doesn'?t|does not) have an? [\w.-]+ account"
            r"|not an? (?:valid|known) (?:user|recipient|mailbox|address)|not a valid user"
            r"|bad destination (?:mailbox|address)|unrouteable address|no matches to (?:nameserver|directory)"
            r"|did not (?:exactly )?match|does not have a final (?:e-?mail )?delivery point"
            r"|not (?:\w+ )?e-?mail users?|access denied\. as\(\d+\)|(?:address|recipient) (?:is )?(?:wrong|incorrect)"
            r"|wrong (?:e-?mail )?address|n'existe pas|unbekannt|existiert nicht|no existe|inexistente"
            r"|non esiste|sconosciuto"
        ),
    ),
    (
        Reason.SERVER_DOWN,
        _words(
            r"connection (?:was )?(?:refused|timed out|reset|lost|failed|dropped|closed)|dropped by remote host"
            r"|unavailable to take delivery"
            r"|(?:can'?t|cannot|could not|couldn'?t|unable to|wasn'?t able to|failed to) (?:connect|establish|reach)"
            r"|not responding|no answer|did not respond|not reachable|unreachable|connection to mail exchanger"
            r"|server (?:is )?(?:busy|unavailable|down|error)|service (?:temporarily )?unavailable"
            r"|temporar(?:il)?y (?:unavailable|failure|error|local problem)|command died"
            r"|local (?:configuration|delivery) (?:error|problem)|internal (?:server )?error"
            r"|system (?:error|failure)|insufficient system resources"
        ),
    ),
    (
        Reason.EXPIRED,
        _words(
            r"expired|timed? ?out|maximum[- ](?:delivery )?(?:attempts|time)|delivery failed \d+ attempts"
            r"|after \d+ (?:delivery )?attempt|too long|not delivered within|aborted after"
            r"|retry time(?:out)? (?:exceeded|reached)"
        ),
    ),
    (Reason.SECURITY, _words(r"\btls\b|starttls|\bssl\b|certificate|encrypt")),
    (
        Reason.PROTOCOL,
        _words(
            r"\bno [\w-]+ (?:header|field)\b|missing\b[^.\n]{0,30}\b(?:header|field)|syntax error"
            r"|(?:malformed|invalid|illegal|duplicate)\b[^.\n]{0,20}\b(?:header|message|syntax|command)"
            r"|command (?:not recognized|unrecognized)|line too long|bare (?:lf|linefeed)"
        ),
    ),
    (
        Reason.POLICY,
        _words(
            r"polic(?:y|ies)|prohibit|not (?:accepting|accepted|allowed|permitted|authori[sz]ed)|refused"
            r"|rejected|denied|blocked|forbidden|administrative|content filter"
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


def reason_from_text(text: str) -> Reason | None:
    """The reason named by a server's wording, or None when the text names none."""
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
    return judge(text, code=code, status=parse_status(text))


def classify_failure(
    text: str, *, code: int | None = None, status: str | None = None, transient: bool = False
) -> Verdict:
    """Classify a failure reported after the fact (a DSN field, a bounce text).

    A bounce is a final report, so without any class information it counts as permanent unless its
    words (or the caller, for a delayed DSN) say the sender will retry.
    """
    code = code if code is not None else find_reply_code(text)
    status = status if status is not None else find_status(text)
    if code is None and status is None and _TRANSIENT_HINT.search(text):
        transient = True
    return judge(text, code=code, status=status, transient=transient, permanent_default=True)


def judge(
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
    named = reason_from_text(text)
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
