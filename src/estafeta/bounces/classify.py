"""Turn an SMTP reply, or the diagnostic text of a bounce, into a verdict with a reason and its evidence.

One set of rules serves every input: the reply of a receiver during delivery, the fields of a DSN, the text
of a free-form bounce. The reason comes from weighing two witnesses:

* the enhanced status code (RFC 3463), when there is one: specific codes (5.1.1 user unknown, 5.2.2 mailbox
  full …) or only the subject of a generic one (x.7.0 policy, x.4.0 network …);
* the wording, matched against the phrases of real servers and providers (Gmail, Microsoft 365/Outlook,
  Yahoo/AOL, Apple, Orange, GoDaddy, docomo, Postfix, Exim, qmail, Sendmail, Exchange, Domino …), in
  priority order: phrases that say the address is alive but the message failed (quota, rate limit, spam,
  authentication, blocklists, disabled accounts) come before the phrases of dead addresses, so a
  `552 … over quota (#5.1.1)` is a full mailbox, not an unknown user.

Words beat a code they contradict, except the codes whose meaning is unambiguous and alive (a full mailbox,
a message too large, an authentication failure, a rate limit) or about the sender's own address (X.1.7,
X.1.8): `5.2.2 user unknown` stays a full mailbox, `5.1.7 invalid address` stays the sender's.
A code beats words that name no reason more precise than "rejected" or "denied".

Then the stage of the refusal, when known (from the delivery itself, or "in reply to RCPT TO command",
"after end of data" and the like): a refusal after MAIL FROM is about the sender; "user unknown" given only
after DATA is usually a content filter pretending, so it counts as `filtered`, not as a dead address.

Finally the class: a 4xx reply, a 4.x.x status, a delayed DSN or words like "try again later" make the
failure transient (soft, whatever the reason). Only dead addresses are hard (see `estafeta.bounces.policy`);
an unrecognised failure is never hard.
"""

from __future__ import annotations

import re
from re import _constants, _parser  # type: ignore[attr-defined]

from estafeta.bounces.policy import DEFAULT_POLICY, Policy, judge
from estafeta.bounces.reasons import REASON_DETAIL, Evidence, Kind, Reason, Verdict

# Enhanced codes whose meaning is specific, keyed by "subject.detail" or, where the class changes the
# meaning, by the full code.  Overloaded codes (x.7.1, x.4.1 …) are absent: the wording decides.
_STATUS_REASONS: dict[str, Reason] = {
    "1.0": Reason.USER_UNKNOWN,
    "1.1": Reason.USER_UNKNOWN,
    "1.2": Reason.NO_SUCH_DOMAIN,
    "1.3": Reason.USER_UNKNOWN,
    "1.4": Reason.FILTERED,
    "1.6": Reason.HAS_MOVED,
    "1.7": Reason.SENDER_REJECTED,
    "1.8": Reason.SENDER_REJECTED,
    "1.10": Reason.NOT_ACCEPTING,
    "2.0": Reason.FILTERED,
    "2.1": Reason.MAILBOX_DISABLED,
    "2.2": Reason.MAILBOX_FULL,
    "2.3": Reason.MESSAGE_TOO_LARGE,
    "2.4": Reason.FILTERED,
    "3.1": Reason.SERVER_DOWN,
    "3.2": Reason.SERVER_DOWN,
    "3.4": Reason.MESSAGE_TOO_LARGE,
    "3.5": Reason.SYSTEM_ERROR,
    "4.1": Reason.SERVER_DOWN,
    "4.2": Reason.SERVER_DOWN,
    "4.3": Reason.DNS_FAILURE,
    "5.4.4": Reason.NO_SUCH_DOMAIN,
    "4.4.4": Reason.DNS_FAILURE,
    "4.5": Reason.SERVER_DOWN,
    "4.6": Reason.SYSTEM_ERROR,
    "4.7": Reason.EXPIRED,
    "5.3": Reason.RATE_LIMITED,
    **{f"6.{detail}": Reason.PROTOCOL for detail in range(1, 11)},
    "7.7": Reason.SECURITY,
    "7.8": Reason.AUTHENTICATION,
    "7.9": Reason.POLICY,
    "7.10": Reason.SECURITY,
    "7.11": Reason.SECURITY,
    "7.13": Reason.MAILBOX_DISABLED,
    "7.16": Reason.MESSAGE_TOO_LARGE,
    "7.17": Reason.HAS_MOVED,
    "7.18": Reason.HAS_MOVED,
    **{f"7.{detail}": Reason.AUTHENTICATION for detail in range(20, 27)},
    "7.25": Reason.AUTHENTICATION,
    "7.27": Reason.NOT_ACCEPTING,
    "7.28": Reason.RATE_LIMITED,
    "7.29": Reason.AUTHENTICATION,
    "7.30": Reason.SECURITY,
}
# Codes whose meaning is unambiguous and says the address is alive: words of a dead address do not beat them.
# X.1.7 and X.1.8 (RFC 3463: bad sender's mailbox address or system address) are about the sender's address,
# so "address not valid" or "domain not found" under them speaks of the sender, never of the recipient.
_ALIVE_STATUSES = frozenset(
    {"1.7", "1.8", "2.2", "2.3", "3.4", "7.16", "7.20", "7.21", "7.22", "7.23", "7.24", "7.25", "7.26"}
    | {"7.28"}
)
# When neither a specific code nor the wording names a reason, the subject of the code still says which area
# failed (RFC 3463 §3).
_SUBJECT_REASONS: dict[str, Reason] = {
    "3": Reason.SYSTEM_ERROR,
    "4": Reason.SERVER_DOWN,
    "5": Reason.PROTOCOL,
    "6": Reason.PROTOCOL,
    "7": Reason.POLICY,
}


def _any_of(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(alternatives), re.I)


def _required_literals(pattern: str) -> tuple[str, ...] | None:
    """Words one of which every match of `pattern` contains, or None when no such words are known.

    Read from the parsed pattern: runs of plain characters in the top-level sequence (zero-width assertions
    like \\b do not break a run), or one word from each branch of an alternation. `word in text` is far
    cheaper than a regex scan that cannot skip ahead to a literal start, and most phrases occur in few
    texts; the pattern is only run where one of the words occurs."""
    try:
        return _words_of(list(_parser.parse(pattern)))
    except Exception:  # a private module's shape changed: do without the shortcut
        return None


def _words_of(sequence: list) -> tuple[str, ...] | None:  # type: ignore[type-arg]
    candidates: list[tuple[str, ...]] = []
    run = ""
    for op, arg in sequence:
        if op is _constants.LITERAL:
            run += chr(arg)
            candidates.append((run,))
            continue
        if op is _constants.AT:
            continue
        run = ""
        if op is _constants.SUBPATTERN:
            inner = _words_of(list(arg[-1]))
            candidates += [inner] if inner else []
        elif op is _constants.BRANCH:
            each = [_words_of(list(branch)) for branch in arg[1]]
            if all(each):
                candidates.append(tuple(w for words in each if words for w in words))
    usable = [c for c in candidates if min(map(len, c)) >= 3]
    return max(usable, key=lambda c: min(map(len, c))) if usable else None


class _Phrases:
    """The phrases of one reason, matched against lower-cased text: one compiled pattern per phrase and no
    IGNORECASE, which lets the regex engine skip ahead to each phrase's literal start (several times faster
    on long reports than one case-insensitive alternation); a phrase is only searched for when a word that
    all its matches contain occurs in the text."""

    def __init__(self, *alternatives: str) -> None:
        self.patterns = [(re.compile(a), _required_literals(a)) for a in alternatives]

    def search(self, lowered: str) -> re.Match[str] | None:
        found = [
            m
            for pattern, words in self.patterns
            if (words is None or any(w in lowered for w in words)) and (m := pattern.search(lowered))
        ]
        return min(found, key=lambda m: m.start()) if found else None


# The wording of real servers, in priority order: the first reason whose pattern matches wins.  Texts are
# matched with their whitespace collapsed, so a phrase may span the lines of a bounce.
_TEXT_REASONS: list[tuple[Reason, _Phrases]] = [
    (Reason.GREYLISTED, _Phrases(r"gr[ae]y[- ]?list")),
    (
        Reason.RATE_LIMITED,
        _Phrases(
            r"rate[- ]?limit",
            r"unusual rate|unexpected volume",
            r"too many (?:messages|mails?|e-?mails|connections|sessions|concurrent)"
            r"(?! (?:on|in) (?:the|this|his|her|your) (?:server|mailbox|account|inbox))",
            r"too many (?:recipients|rcpt|invalid recip)",
            r"(?:excessive|too many|high (?:number|rate|volume) of) (?:unknown|invalid|non-?existent|bad)"
            r" (?:recipients|users|addresses|rcpts?)\b",
            r"(?:sent|send) to too many|has sent too many",
            r"throttl|\bslow down\b",
            r"temporarily deferred|\[ts[s]?\d\d\]|\[gl01\]",
            r"sending (?:rate|quota|limit)|(?:daily|hourly|per hour|per day)\b[^.]{0,30}\b(?:quota|limit)",
            r"submission ?quota|quota for sending",
            r"exceeded\b[^.]{0,20}\b(?:rate|receiving limits)|too fast",
            r"\bdyn:t1\b|\brly:b1\b|receiving (?:e-?)?mail (?:at a rate|a rate|too quickly|too fast)",
            r"(?:received|receiving|receives) too much (?:e-?)?mail",
        ),
    ),
    (
        Reason.MAILBOX_FULL,
        _Phrases(
            r"quota",
            r"mail ?box (?:is )?full|full mail ?box|mailbox (?:is )?(?:over|exceeds)",
            r"(?:mail ?box|mail ?folder|inbox|mail ?store|account) (?:is )?(?:full|over\b)",
            r"(?:disk|storage|mailbox|diskspace) (?:space|limit|usage)|box space not enough|too much mail",
            r"insufficient (?:disk )?(?:space|storage)|out of (?:storage|disk space)|no space left",
            r"not (?:have )?enough (?:disk |storage )?space|space has been used up",
            r"(?:storage|mailbox) (?:size )?limit|size limit exceeded",
            r"exceed(?:s|ed|ing)? (?:their |the |its )?(?:storage|mailbox|disk|allowed size)",
            r"too many messages (?:on|in) the server|zuviele mails|mailbox lleno|casilla (?:llena|agotad)",
            r"espacio en casilla|boite (?:du destinataire )?pleine|postfach (?:ist )?voll",
        ),
    ),
    (
        Reason.MESSAGE_TOO_LARGE,
        _Phrases(
            r"too (?:large|big)|message is larger",
            r"message size|size (?:limit|exceed)|message length exceeds|max(?:imum)? message size",
            r"maximum (?:allowed |incoming |inbound )?(?:message )?size|\bsize=",
            r"exceed(?:s|ed)? (?:the )?(?:maximum|max)\b[^.]{0,30}\bsize|sizelimit",
        ),
    ),
    (
        Reason.SENDER_REJECTED,
        _Phrases(
            r"sender (?:address )?(?:rejected|refused|denied|not accepted)",
            r"unroutable sender|unrouteable sender",
            r"sender verif\w* failed|verification failed for|sender (?:domain )?(?:unknown|must exist)",
            r"(?:sending|your|from) address not accepted|not allowed to send mail from",
            r"invalid sender|bad sender|sender address (?:is )?(?:invalid|unknown)",
            r"mail from .{0,40} rejected",
            r"domain of sender address .{0,60} does not (?:resolve|exist)|return path",
            r"\bsender(?:'s)? (?:e-?mail )?(?:address|domain)\b(?:[^.;:]|\.(?=\S)){0,40}?"
            r"\b(?:not (?:valid|found|known)|invalid|is not a valid|unknown|does not exist|doesn'?t exist"
            r"|not exist|no such)",
        ),
    ),
    (
        Reason.AUTHENTICATION,
        _Phrases(
            r"unauthenticated|not authenticated|authentication (?:failed|failure|required|check)",
            r"\bspf\b|\bdkim\b|\bdmarc\b|sender policy framework|domainkeys",
            r"\bptr\b|reverse dns|rdns|reverse (?:lookup|dns|mapping)|no (?:reverse|ptr)",
            r"helo\b[^.]{0,40}\b(?:invalid|rejected|not)",
            r"(?:invalid|bad) helo|cannot find your (?:reverse )?hostname",
        ),
    ),
    (
        Reason.BLOCKLISTED,
        _Phrases(
            r"spamhaus|spamcop|barracuda ?(?:central|reputation)",
            r"\bsorbs\b|\bs3(?:1[45]0|140)\b|\bdnsbl\b|\brbl\b",
            r"block ?list|black ?list|blocked using|\bcss\b|\bbl\d{3}\b|\bbl2\d\b",
            r"(?<!not )(?:is|are|been|currently|ip|host) listed (?:at|on|in|by)|reputation",
            r"(?:access|connection|mail) from (?:ip|your ip|\[?\d)[^.]{0,60}"
            r"\b(?:blocked|refused|rejected|denied)",
            r"(?:ip|client host|host|network)\b[^.]{0,60}\b(?:blocked|refused|banned)",
            r"comcast block|\brtr:\w\w\b|\bcon:b1\b|dynamic ip|dial-?up|residential|\bib\d{3}\b",
            r"banned sending ip|sending ip (?:is )?(?:banned|blocked)|traffic not accepted from this ip",
        ),
    ),
    (
        Reason.SPAM_CONTENT,
        _Phrases(
            r"\bspam(?:ming)?\b|unsolicited|\bjunk\b|\bube\b|bulk (?:e-?mail|mail)|mass mailer",
            r"\bvirus(?:es)?\b|malware|infected|phish|trojan",
            r"harmful|banned (?:file|attachment)|illegal attachment",
            r"potential security issue|suspicious (?:content|link|attachment)|content (?:reject|filter)",
            r"message content rejected|\buribl\b|\bsurbl\b|\bdcc\b|spam ?(?:score|assassin|profile)",
        ),
    ),
    (
        Reason.RELAY_DENIED,
        _Phrases(
            r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited|refused|disallowed|not allowed)",
            r"unable to relay|cannot relay|(?:we )?do not relay|no relaying|as a relay",
            r"(?:not|never) (?:permitted|allowed|authori[sz]ed|configured) to relay",
        ),
    ),
    (
        Reason.MAILBOX_DISABLED,
        _Phrases(
            r"\b(?:account|mailbox|user|address|recipient|casilla)\b(?:(?!server|host\b|system|service)[^.;:]){0,40}"
            r"\b(?:disabled|discontinued"
            r"|deactivated|inactive|suspended|terminated|frozen|locked|dormant|has expired|ha expirado"
            r"|temporarily unavailable|not active)",
            r"\[suspend\]|currently suspended|not been collected|deactivated mailbox|account unavailable",
            r"is a deactivated|expirado por falta de uso|mailbox (?:not available|is unavailable)",
            r"archived recipient|destinataire archiv|account (?:is |has been |was )?closed",
        ),
    ),
    (
        Reason.HAS_MOVED,
        _Phrases(r"has moved|no longer on (?:this )?server|has been replaced by|not our customer|moved away"),
    ),
    (
        Reason.FILTERED,
        _Phrases(
            r"not accepting (?:mail|e-?mail|messages) (?:with|from)|only accepting mail from",
            r"restricted sms|refuses? to (?:receive|accept)|blocked by the recipient|recipient preferences",
            r"user rules|message filtered|\buser reject|requires confirmation|not pre-approved|guest list",
            r"sender (?:is )?(?:blocked|not allowed) by (?:the )?recipient|restrictedto\w*permission",
            r"(?:not|isn'?t) (?:authori[sz]ed|allowed) to send to this (?:recipient|group)",
            r"sendernotauthenticatedforgroup",
        ),
    ),
    (
        Reason.USER_UNKNOWN,
        _Phrases(
            r"user unknown",
            r"unknown (?:local[- ]part|user|recipient|address|mailbox|addressee|e-?mail address)",
            r"\b(?:recipient|address|mailbox|addressee|account|user)\b[^.;:]{0,12}\bunknown\b",
            r"unknown or illegal (?:user|alias)|non-?existent (?:user|recipient|mailbox|address|account)",
            r"no such (?:user|mailbox|recipient|address|account|person|local user)|no mail ?box|no account",
            r"mailbox (?:unavailable|not found|does not exist|doesn'?t exist|unknown|invalid)",
            r"invalid mailbox",
            r"invalid (?:recipient|address|user|final delivery|e-?mail|mailbox)|bad[-_ ]recipient|badrcptto",
            r"\b(?:user|recipient|mailbox|account|address|addressee|rcpt)\b(?:[^.;:]|\.(?=\S)){0,48}?"
            r"\b(?:does not exist|doesn'?t exist|not exist|not found|not known|not recognized|is unknown"
            r"|not valid|nicht|nie istnieje|is not a valid)",
            r"(?:address|name)\b[^.;:]{0,30}\b(?:ambiguous|not unique)|not recogni[sz]ed by our system",
            r"recipient name is not recognized|not listed in|bad destination (?:mailbox|address)",
            r"(?:doesn'?t|does not) have an? [\w.-]+ account|no longer (?:valid|in use|available|exists?)",
            r"not an? (?:valid|known|active) (?:user|recipient|mailbox|address)|not a valid user",
            r"unrouteable address|no matches to (?:nameserver|directory)|did not (?:exactly )?match",
            r"does not have a final (?:e-?mail )?delivery point|not (?:\w+ )?e-?mail users?",
            r"recipient address rejected: (?:access denied|user|invalid|unknown|\w+ does not)",
            r"resolver\.adr\.recip\w*notfound|recipnotfound",
            r"recipientnotfound|not found by smtp address lookup",
            r"address (?:is )?(?:wrong|incorrect|invalid)|wrong (?:e-?mail )?address|err\.nosuchuser",
            r"list of allowed rcpthosts|isn'?t in my list of allowed|not a local address",
            r"n'existe pas|unbekannt|existiert nicht|no existe",
            r"inexistente|non esiste|sconosciuto|desconocido",
            r"destinataire invalide|adresse (?:email )?invalide|utilisateur inconnu",
        ),
    ),
    (
        Reason.NOT_ACCEPTING,
        _Phrases(
            r"null mx|accepts no mail|no mx record found for domain",
            # "does not accept email over IPv6 / from your IP …" refuses one way of sending, not all mail
            r"does not accept (?:e-?)?mail"
            r"(?! (?:over|from|via|with|without|unless|larger|bigger|sent|of|when|if)\b)",
        ),
    ),
    (
        Reason.DNS_FAILURE,
        _Phrases(
            r"not found, try again|servfail|malformed (?:or unexpected )?name server",
            r"dns (?:error|failure|lookup fail\w*|timeout|timed out|temporar\w*)"
            r"(?!(?:[^.]|\.(?=\S)){0,60}\b(?:not found|does not exist|nxdomain|no such))",
            r"temporary (?:dns|lookup|resolution)|lookup timed out",
        ),
    ),
    (
        Reason.NO_SUCH_DOMAIN,
        _Phrases(
            r"unknown host|host unknown|unknown domain|no such (?:domain|host)|domain name not found",
            r"host (?:or domain name )?not found(?!, try again)",
            r"couldn'?t find any host|name or service not known",
            r"(?:domain|host) (?:name )?(?:does not exist|doesn'?t exist|not found|unknown)",
            r"(?:domain|host) (?:name )?(?:is not valid|must exist)",
            r"unrouteable mail domain|nxdomain|no (?:mx|mail exchanger)|domain is not reachable",
            r"dns error: domain|mail domain mentioned in email address is unknown",
            r"point to non-?existent hosts|dns lookup failure: host",
        ),
    ),
    (
        Reason.EXPIRED,
        _Phrases(
            r"expired|timed? ?out|too long|aborted after|giving up|given up|gave up",
            r"maximum[- ](?:delivery )?(?:attempts|time)|retry time(?:out)? (?:exceeded|reached)",
            r"delivery failed \d+ attempts|after \d+ (?:delivery )?attempt|not delivered within",
            r"failing for a long time|could not (?:be )?deliver(?:ed)? for|cannot send message for",
            r"for the last \d+ (?:seconds|hours|days)|queue (?:time|period)",
            r"retry time not reached|long failure period",
        ),
    ),
    (
        Reason.SYSTEM_ERROR,
        _Phrases(
            r"too many hops|mail loop|looping|loops back|routing loop",
            r"local (?:configuration|delivery) (?:error|problem)|internal (?:server )?error|command died",
            r"system (?:error|failure)|insufficient system resources|local error|mailer (?:error|failure)",
            r"misconfigur|configuration error|transmission failure",
        ),
    ),
    (
        Reason.SERVER_DOWN,
        _Phrases(
            r"connection (?:was )?(?:refused|timed out|reset|lost|failed|dropped|closed)",
            r"dropped by remote host|unavailable to take delivery|connection to mail exchanger",
            r"(?:can'?t|cannot|could not|couldn'?t|unable to|wasn'?t able to|failed to) "
            r"(?:connect|establish|reach)",
            r"not responding|no answer|did not respond|not reachable|unreachable|read error",
            r"server (?:is )?(?:busy|unavailable|down|error)|service (?:currently |temporarily )?unavailable",
            r"temporar(?:il)?y (?:unavailable|failure|error|local problem)|try (?:again )?later",
        ),
    ),
    (Reason.SECURITY, _Phrases(r"\btls\b|starttls|\bssl\b|certificate|encrypt")),
    (
        Reason.PROTOCOL,
        _Phrases(
            r"\bno [\w-]+ (?:header|field)\b|missing\b[^.]{0,30}\b(?:header|field)|without to: field",
            r"(?:malformed|invalid|illegal|duplicate)\b[^.]{0,20}\b(?:header|message|syntax|command)",
            r"syntax error|command (?:not recognized|unrecognized)|line too long|bare (?:lf|linefeed)",
            r"\b8-?bit\b|rfc ?5322|rfc ?2822|not rfc",
        ),
    ),
    (
        Reason.POLICY,
        _Phrases(
            r"polic(?:y|ies)|prohibit|forbidden|administrative",
            r"not (?:accepting|accepted|allowed|permitted|authori[sz]ed)|refused|rejected|denied|blocked",
        ),
    ),
]

# A reply with no code at all: the text tells a dead server from a domain that does not exist.
_NO_REPLY_REASONS: list[tuple[Reason, _Phrases]] = [
    (r, p) for r, p in _TEXT_REASONS if r in (Reason.DNS_FAILURE, Reason.NO_SUCH_DOMAIN)
]

# Words that mark a failure as temporary when neither a basic nor an enhanced code says so.
_TRANSIENT_HINT = re.compile(
    r"try again later|please try (?:to resend|again|later)|resend (?:this|the|your) message"
    r"|will be retried|temporar(?:y|ily)|persistent transient",
    re.I,
)

# The command a refusal answered, as MTAs write it in their reports.
_STAGES: list[tuple[str, re.Pattern[str]]] = [
    ("mail", _any_of(r"in reply to mail from|after mail from|>>> mail from|mail from:? command")),
    ("rcpt", _any_of(r"in reply to rcpt to|after rcpt to|>>> rcpt to|rcpt to:? command")),
    (
        "data",
        _any_of(
            r"in reply to (?:end of )?data|after (?:end of )?data|>>> data|message scanning|scanning code"
        ),
    ),
]
# Sendmail pipelines MAIL, RCPT and DATA: a refused RCPT shows up under ">>> DATA", followed by "503 need
# RCPT" (or "no recipients"). Then the refusal was the recipient's, not the message's.
_PIPELINED = _any_of(
    r"<<< ?503\b[^\n]{0,60}\b(?:rcpt|recipient)",
    r"503[ -][^\n]{0,30}(?:need rcpt|rcpt first|no recipients|valid rcpt)",
    r"<<< ?5\d\d\b[^\n]{0,40}no valid recipients",
)

_MAX_WORDS = 3000
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_ENHANCED_AT_START = re.compile(r"^\s*(?:[2-5]\d\d[\s-]+)?#?([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
# Anywhere in free text, an enhanced code must follow a basic code, '#', '(' or ':' or open a line, so
# that software versions ("Exim 4.69", "8.9.3") and IP addresses are not mistaken for one.
_ENHANCED_IN_TEXT = re.compile(
    r"(?:^|[245]\d\d[ -]|[#(:]\s?|status:?\s|;\s)\s*([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)", re.I | re.M
)
_CODE_AT_START = re.compile(r"^\s*([2-5]\d\d)(?=[\s-]|$)")
_CODE_IN_TEXT = re.compile(
    r"(?:^|said:|replied:|returned:|response:|error:|reason:|\[smtp error code|<<<|smtp;|"
    r"returned '|host \S+ \[[\d.]+\]:)\s*([45][0-5]\d)(?=[\s\-:\]]|$)",
    re.I | re.M,
)
# "550-5.1.1 " at the start of each line of a multi-line reply, dropped from the summary.
_LINE_PREFIX = re.compile(r"^\s*[2-5]\d\d[ -](?:[245]\.\d{1,3}\.\d{1,3}\s+)?", re.M)
_SPACE = re.compile(r"\s+")


def parse_status(text: str) -> str | None:
    """The enhanced status code that opens a reply, e.g. "5.1.1" in "550-5.1.1 The email account …"."""
    match = _ENHANCED_AT_START.match(text)
    return ".".join(match.groups()) if match else None


def find_status(text: str) -> str | None:
    """The first enhanced status code anywhere in a bounce's free text."""
    match = _ENHANCED_IN_TEXT.search(text)
    return ".".join(match.groups()) if match else None


def find_reply_code(text: str) -> int | None:
    """The first SMTP failure reply code quoted in a bounce's free text ("… said: 550 …")."""
    match = _CODE_AT_START.match(text) or _CODE_IN_TEXT.search(text)
    if match is None:
        return None
    code = int(match.group(1))
    return code if code >= 400 else None


def find_stage(text: str) -> tuple[str | None, Evidence | None]:
    """The SMTP command a refusal answered, when a report says so: mail, rcpt or data."""
    found = [(m.start(), stage, m.group(0)) for stage, pattern in _STAGES if (m := pattern.search(text))]
    if not found:
        return None, None
    at, stage, words = min(found)
    if stage == "data" and _PIPELINED.search(text, at):
        return "rcpt", Evidence("stage", f"'{words}' then '503 need RCPT': a pipelined RCPT refusal")
    return stage, Evidence("stage", f"refused at {stage.upper()} ('{words}')")


def reason_from_text(text: str) -> tuple[Reason, str] | None:
    """The first reason, in priority order, whose phrases occur in the text, with the words that matched.

    Only the first `_MAX_WORDS` characters are read: a reason is stated up front, and what follows it in a
    long report (quoted headers, footers) only costs time and brings false friends."""
    text = text[:_MAX_WORDS]
    lowered = text.lower()
    for reason, phrases in _TEXT_REASONS:
        match = phrases.search(lowered)
        if match:
            words = text[match.start() : match.end()] if len(lowered) == len(text) else match.group(0)
            return reason, words
    return None


def classify_reply(
    code: int | None, text: str, *, stage: str | None = None, policy: Policy = DEFAULT_POLICY
) -> Verdict:
    """Classify the final reply of one SMTP transaction; code None means no reply came at all."""
    if code is None:
        flat = _flatten(text).lower()
        reason, why = next(
            ((r, m.group(0)) for r, p in _NO_REPLY_REASONS if (m := p.search(flat))),
            (Reason.SERVER_DOWN, "no SMTP reply"),
        )
        evidence = [Evidence("text", f"'{why}' means {reason}")]
        if reason is Reason.NO_SUCH_DOMAIN:
            kind, scope, said = judge(reason, policy)
            evidence.append(said)
            return _verdict(kind, reason, None, None, text, evidence, permanent=True, scope=scope)
        return _verdict(Kind.SOFT, reason, None, None, text, evidence)
    if 200 <= code < 300:
        evidence = [Evidence("class", f"{code}: accepted")]
        return _verdict(Kind.NONE, Reason.DELIVERED, parse_status(text), code, text, evidence)
    if not 400 <= code < 600:
        evidence = [Evidence("class", f"{code} is no failure reply code")]
        return _verdict(Kind.SOFT, Reason.PROTOCOL, None, code, text, evidence)
    status = parse_status(text) or find_status(text)
    return judge_failure(text, code=code, status=status, stage=stage, policy=policy)


def classify_failure(
    text: str,
    *,
    code: int | None = None,
    status: str | None = None,
    transient: bool = False,
    stage: str | None = None,
    policy: Policy = DEFAULT_POLICY,
    evidence: list[Evidence] | None = None,
) -> Verdict:
    """Classify a failure reported after the fact (a DSN field, a bounce text); codes found in the text
    fill in what the caller does not know."""
    evidence = list(evidence or ())
    if code is None:
        code = find_reply_code(text)
    if status is None or not _STATUS.fullmatch(status):
        status = find_status(text)
    if code is None and status is None and not transient and (hint := _TRANSIENT_HINT.search(text)):
        transient = True
        evidence.append(Evidence("class", f"no code, but '{hint.group(0)}': transient"))
    return judge_failure(
        text, code=code, status=status, transient=transient, stage=stage, policy=policy, evidence=evidence
    )


def judge_failure(
    text: str,
    *,
    code: int | None,
    status: str | None,
    transient: bool = False,
    stage: str | None = None,
    policy: Policy = DEFAULT_POLICY,
    evidence: list[Evidence] | None = None,
) -> Verdict:
    """Weigh code, enhanced status, wording and stage into a verdict (the rules of the module docstring)."""
    evidence = list(evidence or ())
    flat = _flatten(text)
    if status is not None and status.startswith("2.") and (code is None or code < 300):
        evidence.append(Evidence("status", f"{status}: success"))
        return _verdict(Kind.NONE, Reason.DELIVERED, status, code, text, evidence)
    reason = _reason(status, flat, evidence)
    if stage is None:
        stage, found = find_stage(text)
        if found is not None:
            evidence.append(found)
    reason = _after_stage(reason, stage, evidence)
    classes = {str(code)[0] if code is not None else None, status[0] if status else None}
    if transient or "4" in classes:
        if not transient:
            evidence.append(Evidence("class", "a 4xx reply or 4.x.x status: transient, the address lives"))
        return _verdict(Kind.SOFT, reason, status, code, text, evidence, stage=stage)
    permanent = "5" in classes
    kind, scope, said = judge(reason, policy)
    evidence.append(said)
    return _verdict(kind, reason, status, code, text, evidence, permanent=permanent, stage=stage, scope=scope)


def _reason(status: str | None, text: str, evidence: list[Evidence]) -> Reason:
    specific = None
    if status is not None:
        subject_detail = status.split(".", 1)[1]
        specific = _STATUS_REASONS.get(status) or _STATUS_REASONS.get(subject_detail)
    worded = reason_from_text(text)
    if worded is not None:
        named, words = worded
        if specific is None or specific is named:
            evidence.append(Evidence("text", f"'{words}' means {named}"))
            if specific is named:
                evidence.append(Evidence("status", f"{status} agrees"))
            return named
        if named is Reason.POLICY or (
            status is not None and status.split(".", 1)[1] in _ALIVE_STATUSES and named in _DEAD_WORDS
        ):
            evidence.append(
                Evidence("status", f"{status} means {specific}; '{words}' says nothing more precise")
            )
            return specific
        evidence.append(
            Evidence("text", f"'{words}' means {named}, which outweighs status {status} ({specific})")
        )
        return named
    if specific is not None:
        evidence.append(Evidence("status", f"{status} means {specific}"))
        return specific
    if status is not None and (area := _SUBJECT_REASONS.get(status.split(".")[1])) is not None:
        evidence.append(Evidence("status", f"{status}: the {area} area, no more precise wording"))
        return area
    evidence.append(Evidence("text", "no recognised code or wording"))
    return Reason.OTHER


_DEAD_WORDS = frozenset({Reason.USER_UNKNOWN, Reason.NO_SUCH_DOMAIN, Reason.HAS_MOVED, Reason.NOT_ACCEPTING})


def _after_stage(reason: Reason, stage: str | None, evidence: list[Evidence]) -> Reason:
    """A refusal after MAIL FROM is about the sender; 'user unknown' only after DATA is a filter's word."""
    if stage == "mail" and reason in (_DEAD_WORDS | {Reason.OTHER, Reason.POLICY, Reason.FILTERED}):
        evidence.append(Evidence("stage", "refused after MAIL FROM: the sender, not the recipient"))
        return Reason.SENDER_REJECTED
    if stage == "data" and reason is Reason.USER_UNKNOWN:
        evidence.append(
            Evidence("stage", "'unknown user' only after DATA: usually a content filter, not a dead address")
        )
        return Reason.FILTERED
    return reason


def _flatten(text: str) -> str:
    return _SPACE.sub(" ", text)


def _verdict(
    kind: Kind,
    reason: Reason,
    status: str | None,
    code: int | None,
    text: str,
    evidence: list[Evidence],
    *,
    permanent: bool = False,
    stage: str | None = None,
    scope: str = "none",
) -> Verdict:
    said = _SPACE.sub(" ", _LINE_PREFIX.sub("", text)).strip()
    detail = REASON_DETAIL[reason]
    if said:
        detail = f"{detail}: {said[:80]}{'…' if len(said) > 80 else ''}"
    return Verdict(kind, reason, status, code, detail, permanent, stage, scope, tuple(evidence))
