"""Read asynchronous bounce mail: RFC 3464 delivery status notifications and the free-form bounces that
many servers still send (Postfix, qmail, Exim, Exchange, Domino, Yahoo …).

A standard DSN is read field by field and each recipient is classified from its Status and
Diagnostic-Code (the words of the receiving server, not the reporting MTA's translation of them).  Anything
else goes through text heuristics, with flufl.bounce — twenty years of Mailman's bounce detectors — as a
second opinion on which recipients failed, asked unless an X-Failed-Recipients header already settles it.
Reports of success (Action delivered, relayed or expanded; a 2.x.x status) and automatic replies
(RFC 3834) are recognised, so that neither ever counts as a bounce.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.errors import MessageError
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr
from typing import Literal

from flufl.bounce import all_failures

from estafeta.bounces.classify import classify_failure, find_reply_code, find_stage, find_status
from estafeta.bounces.enclosures import read_like_classic
from estafeta.bounces.policy import DEFAULT_POLICY, Policy
from estafeta.bounces.reasons import Evidence, Kind, Reason, Verdict


@dataclass(frozen=True)
class RecipientFailure:
    address: str
    status: str | None  # enhanced status code, e.g. "5.1.1"
    action: str  # DSN action: failed, delayed, delivered, relayed, expanded
    diagnostic: str | None  # what the receiving server said, when the bounce quotes it
    verdict: Verdict


@dataclass(frozen=True)
class BounceReport:
    is_bounce: bool
    kind: Kind
    reason: Reason
    recipients: list[RecipientFailure]
    original_message_id: str | None
    original_envelope_id: str | None
    verp_token: str | None
    source: Literal["dsn", "heuristic", "flufl", "ses"]
    evidence: tuple[Evidence, ...] = ()
    scope: str = "none"  # what the worst recipient's failure suppresses: global, account or none


_NOT_A_FAILURE = {"delivered", "relayed", "expanded"}

_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
_DAEMON_LOCAL_PARTS = ("postmaster", "mailer-daemon", "mailer_daemon", "mail-daemon", "mdaemon")


def _any_of(*alternatives: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile("|".join(alternatives), re.I | flags)


# Lines that belong to a quoted header block, not to the list of failed recipients.
_HEADER_LINE = _any_of(
    r"^\s*>",
    r"^\s*(?:from|to|cc|bcc|sent|date|reply-to|return-path|received|sender|errors-to|message-id"
    r"|in-reply-to|references|subject)\s*:",
)
# Where a bounce text stops describing the failure and starts quoting the original message.
_QUOTE_START = re.compile(
    r"^[\s>*=|-]*(?:"
    + "|".join(
        (
            r"below this line is a copy|this is a copy of (?:the|your) message",
            r"a copy of the original message|included is a copy of the message",
            r"(?:the )?(?:original|returned|unsent|undelivered) (?:message|mail)\s*"
            r"(?:follows|below|is attached|details|headers|as received|adjunto)?\s*[-:.]*\s*$",
            r"original message (?:follows|as received)|old message:|mensaje original",
            r"(?:the )?message (?:header|headers|text|body)s? (?:follows?|is following)",
            r"(?:the )?header of (?:the )?(?:original|source) (?:message|mail)",
            r"start of returned message|returned mail follows|unsent message below",
            r"your message reads|the first \d+ lines of your original|the header and top \d+ lines",
            r"content-type:\s*message/rfc822",
        )
    )
    + ")",
    re.I | re.M,
)
_FAILURE_WORDS = _any_of(
    r"(?:could not|couldn'?t|cannot|can'?t) be delivered|could not deliver",
    r"(?:was|were|has|have) not (?:yet )?(?:been )?delivered|not delivered to|message not delivered",
    r"undeliverable|undelivered|(?:unable|not able|wasn'?t able) to deliver",
    r"delivery (?:has )?failed|delivery failure|failed permanently|permanent (?:fatal )?error",
    r"did not reach|could not be reached|did not receive this message",
    r"delivery to the following recipients?|has been delayed|message delayed",
    r"delivery (?:has been )?postponed|has been postponed",
    r"returned mail|returning message to sender|failed mail|failed (?:addresses|recipients)",
    r"mail delivery (?:failed|problem)|mail (?:delivery )?fail|mail error|mail system error",
    r"automatically rejected|(?:was|were) not accepted|not accepting mail|non-delivery",
    r"delivery status notification|delivery report|failure notice|error during delivery",
    r"encountered (?:an error|delivery problems)|user unknown",
    r"nicht zugestellt|n'a pas pu|no pudo ser entregado|non remis|无法发送|无法送达|投递失败|退信",
)
# Warnings about a delay: the sender is still retrying, so nothing is final yet.
_DELAY_WORDS = _any_of(
    r"warning (?:message )?only|this is (?:just )?a warning|advisory-only",
    r"not yet been delivered|(?:attempts|delivery) will continue|will be retried",
    r"will continue (?:to try|trying|to attempt)|still (?:being retried|awaiting delivery)",
    r"has been delayed|delivery (?:has been )?delayed|message delayed|delayed mail",
    r"has been postponed|no action is required",
)
_AUTO_REPLY_SUBJECT = _any_of(
    r"out of (?:the )?office|away from (?:my|the) (?:desk|office|mail)|vacation|on leave|abwesen|i'?m away",
    r"auto(?:matic)?[- ]?(?:reply|response|antwort)|^auto:|\(automatic response\)|automatyczna",
    r"r[ée]ponse automatique|respuesta autom[áa]tica|risposta automatica|absence",
)
_AUTO_REPLY_BODY = _any_of(
    r"\b(?:i am|i'm|i will be) (?:currently )?(?:out of (?:the )?office|away from (?:the|my) (?:office|desk)"
    r"|away until|on (?:annual )?(?:leave|vacation|holiday))",
    r"\bi am away\b|this is an automated (?:response|reply)",
)
_MAX_BYTES = 128 * 1024
_MAX_TEXT = 20_000  # a bounce explains itself in its first lines; the rest is quoted mail
# Footers of virus scanners and the like, whose words ("spam", "virus") are no reason for the bounce.
_BOILERPLATE = re.compile(
    r"(?im)^.*(?:scanned (?:for|by)|virus[- ](?:free|checked|scanned)|antivirus|nod32"
    r"|report this email as spam"
    r"|has been scanned|believed to be clean).*$"
)
# Sendmail's own translation of a remote refusal ("550 5.1.1 <a@b>... User unknown") under the real one.
_TRANSLATED = re.compile(
    r"(?im)^\s*5\d\d 5\.\d\.\d+ <[^>\n]*>\.\.\. (?:user unknown|service unavailable)\s*$"
)
_SUCCESS_WORDS = _any_of(
    r"^\s*(?:delivered|relayed|return receipt|delivery receipt)\b",
    r"\(success\)|successful(?:ly)? (?:mail )?deliver",
    r"(?:has|have) been (?:successfully )?(?:delivered|relayed) to|delivery to the following recipients? "
    r"(?:was|has been) (?:successful|complete)",
    r"delivery to these recipients or (?:distribution )?(?:lists|groups) is complete",
    r"following addresses had successful delivery",
)
_THANKS = re.compile(r"thank you for (?:your|you) (?:e-?mail|message)|will (?:reply|respond|get back)", re.I)
_X400_PREFIX = re.compile(r"^(?:smtp|rfc-?822)=", re.I)
_MENTIONED_MESSAGE_ID = re.compile(r"message-?id\W{0,20}(?:of\s+)?<([^<>\s]+)>", re.I)
_TAG = re.compile(r"<[^>]*>")
_UNICODE_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_VERP = re.compile(r"^bounces\+([^@]+)@", re.I)


def parse_message(raw: bytes) -> Message:
    """Parse raw mail once, forgiving the blank first line some gateways put before the headers.

    Only the first `_MAX_BYTES` are parsed: a report says what happened before it quotes the original
    message, which can be large and tells the classifier nothing more."""
    return read_like_classic(message_from_bytes(raw.lstrip(b" \t\r\n")[:_MAX_BYTES], policy=policy.compat32))


def parse_bounce(raw: bytes | Message, policy: Policy = DEFAULT_POLICY) -> BounceReport:
    """Read one inbound message sent to the return path and say whether, why and for whom it bounced."""
    msg = parse_message(raw) if isinstance(raw, bytes) else raw
    token = verp_token(msg)
    if find_part(msg, "message/feedback-report") is not None:  # a complaint (ARF), read by parse_complaint
        return BounceReport(False, Kind.NONE, Reason.OTHER, [], None, None, token, "heuristic")
    envelope_id = None
    recipients: list[RecipientFailure] = []
    source: Literal["dsn", "heuristic", "flufl"] = "dsn"
    evidence: list[Evidence] = []
    notification = _notification_text(msg)
    report = _delivery_status(msg)
    if report is not None:
        envelope_id = _field(report[0], "Original-Envelope-Id")
        recipients = _dsn_recipients(report, notification, policy)
        if recipients:
            evidence.append(Evidence("format", "an RFC 3464 delivery-status part, read field by field"))
    if recipients:
        overall = overall_verdict(recipients)
    else:
        disposition = find_part(msg, "message/disposition-notification")
        if disposition is not None and not _deleted_automatically(disposition):
            evidence.append(
                Evidence("format", "a read receipt (RFC 8098 disposition notification), not a bounce")
            )
            return BounceReport(
                False, Kind.NONE, Reason.DELIVERED, [], None, None, token, "heuristic", tuple(evidence)
            )
        if (success := _success(msg, notification)) is not None:
            evidence.append(success)
            return BounceReport(
                False, Kind.NONE, Reason.DELIVERED, [], None, None, token, "heuristic", tuple(evidence)
            )
        if not _from_mail_system(msg) and (auto := _auto_reply(msg, notification)) is not None:
            evidence.append(auto)
            return BounceReport(
                False, Kind.NONE, Reason.OUT_OF_OFFICE, [], None, None, token, "heuristic", tuple(evidence)
            )
        heuristic = _heuristic(msg, notification, policy)
        if heuristic is None:
            evidence.append(
                Evidence("format", "no delivery report, no failure wording, not from a mail system")
            )
            return BounceReport(
                False, Kind.NONE, Reason.OTHER, [], None, None, token, "heuristic", tuple(evidence)
            )
        recipients, overall, source = heuristic
    evidence.extend(overall.evidence)
    return BounceReport(
        is_bounce=overall.kind is not Kind.NONE,
        kind=overall.kind,
        reason=overall.reason,
        recipients=recipients,
        original_message_id=original_message_id(msg),
        original_envelope_id=envelope_id or _enclosed_header(msg, "X-Envelope-Id", "X-Original-Envelope-Id"),
        verp_token=token,
        source=source,
        evidence=tuple(evidence),
        scope=overall.scope,
    )


def parse_fields(raw: bytes, policy: Policy = DEFAULT_POLICY) -> BounceReport:
    """A bare message/delivery-status body (the fields of a DSN without the message around them)."""
    text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    blocks = [
        HeaderParser().parsestr(chunk.strip() + "\n") for chunk in re.split(r"\n\s*\n", text) if chunk.strip()
    ]
    recipients = _dsn_recipients(blocks, "", policy)
    if not recipients:
        return BounceReport(False, Kind.NONE, Reason.OTHER, [], None, None, None, "dsn")
    overall = overall_verdict(recipients)
    evidence = (Evidence("format", "bare delivery-status fields (RFC 3464)"), *overall.evidence)
    return BounceReport(
        overall.kind is not Kind.NONE,
        overall.kind,
        overall.reason,
        recipients,
        None,
        None,
        None,
        "dsn",
        evidence,
        overall.scope,
    )


def verp_token(
    msg: Message, headers: Iterable[str] = ("To", "Delivered-To", "X-Original-To", "Envelope-To")
) -> str | None:
    """The token of a VERP return path ("bounces+<token>@domain") that the message was addressed to."""
    for name in headers:
        values = [str(v) for v in msg.get_all(name, [])]
        if not any("bounces+" in v.lower() for v in values):
            continue  # the address parser is slow; most headers carry no VERP address
        for _, address in getaddresses(values):
            match = _VERP.match(address)
            if match:
                return match.group(1)
    return None


def _decoded_text(part: Message, *, markup: bool = False) -> str:
    """The text of a leaf part, decoded from its transfer encoding and charset, HTML reduced to text (unless
    `markup`)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return str(part.get_payload())
    text = None
    for charset in (part.get_content_charset(), "utf-8"):
        if charset:
            try:
                text = payload.decode(charset)
                break
            except (LookupError, ValueError):  # unknown or malformed charset names (NUL, idna …) too
                continue
    text = text if text is not None else payload.decode("latin-1")
    if part.get_content_subtype() == "html" and not markup:
        text = html.unescape(_TAG.sub(" ", re.sub(r"(?i)<br\s*/?>|</p>", "\n", text)))
    return text


def _header_text(msg: Message, name: str) -> str:
    """A header decoded from RFC 2047 words; undecodable bytes are kept as they are."""
    value = msg.get(name)
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))
    except (LookupError, ValueError, MessageError):  # unknown or malformed charsets, broken encoded words
        return str(value)


def _parts(msg: Message, *, into_enclosed: bool) -> Iterator[Message]:
    """Walk the MIME tree; optionally stay out of enclosed messages (the bounced original, its headers)."""
    yield msg
    if msg.is_multipart() and msg.get_content_type() != "message/delivery-status":
        for part in msg.get_payload():
            if part.get_content_maintype() == "message" and not into_enclosed:
                continue
            yield from _parts(part, into_enclosed=into_enclosed)


def find_part(msg: Message, content_type: str) -> Message | None:
    """The first part of a content type anywhere in the message, enclosed messages included."""
    return _types(msg).get(content_type)


def _types(msg: Message) -> dict[str, Message]:
    """The first part of each content type in the message, found in one walk and kept with the message."""
    found: dict[str, Message] | None = getattr(msg, "_estafeta_types", None)
    if found is None:
        found = {}
        for part in _parts(msg, into_enclosed=True):
            found.setdefault(part.get_content_type(), part)
        msg._estafeta_types = found  # type: ignore[attr-defined]
    return found


def _delivery_status(msg: Message) -> list[Message] | None:
    """The field blocks of the first message/delivery-status part, wherever it is nested."""
    part = find_part(msg, "message/delivery-status")
    return (part.get_payload() or None) if part is not None else None


def _notification_text(msg: Message) -> str:
    """The human-readable explanation of a bounce, without the quoted original message or scanner footers."""
    texts = []
    for part in _parts(msg, into_enclosed=False):
        if part.get_content_maintype() == "text" and part.get_content_subtype() in ("plain", "html"):
            texts.append(_decoded_text(part))
            if part.get_content_subtype() == "plain":
                break  # the plain part says it all; its HTML twin would only repeat it
    if not texts:  # a report nested inside an enclosed message (a forwarded bounce)
        texts = [
            _decoded_text(p) for p in _parts(msg, into_enclosed=True) if p.get_content_type() == "text/plain"
        ][:1]
    text = "\n".join(texts)[:_MAX_TEXT]
    cut = _QUOTE_START.search(text)
    return _BOILERPLATE.sub("", text[: cut.start()] if cut else text)


def _field(block: Message, name: str) -> str | None:
    value = block.get(name)
    return " ".join(str(value).split()) if value is not None else None


def _address_of(value: str | None) -> str | None:
    """The address of a DSN recipient field ("rfc822; <a@b>"), or None for non-Internet types (x400)."""
    if not value:
        return None
    kind, _, rest = value.partition(";")
    if not rest:
        kind, rest = "rfc822", kind
    kind = kind.strip().lower()
    if kind == "utf-8":  # RFC 6533: a UTF-8 address, its non-ASCII characters maybe written \x{HHHH}
        rest = _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), rest)
    elif kind != "rfc822":
        return None
    return rest.strip().strip("<>").strip() or None


def _dsn_recipients(blocks: list[Message], notification: str, policy: Policy) -> list[RecipientFailure]:
    unique: dict[str, tuple[str, Message]] = {}
    for block in blocks:
        final = _field(block, "Final-Recipient")
        original = _field(block, "Original-Recipient")
        if final or original:
            address = _address_of(original) or _address_of(final) or final or original or ""
            unique.setdefault(address.lower(), (address, block))
    failures = []
    addresses = [address for address, _ in unique.values()]
    for address, block in unique.values():
        action = (_field(block, "Action") or "failed").split()[0].lower()
        diagnostic = _field(block, "Diagnostic-Code")
        context = notification if len(unique) == 1 else _lines_about(address, addresses, notification)
        verdict = _dsn_verdict(action, _field(block, "Status") or "", diagnostic, context, policy)
        failures.append(RecipientFailure(address, verdict.status, action, diagnostic, verdict))
    return failures


def _dsn_verdict(
    action: str, status_field: str, diagnostic: str | None, context: str, policy: Policy
) -> Verdict:
    """The receiver's words (Diagnostic-Code) with the Status, then the human text for what they leave out."""
    if action in _NOT_A_FAILURE:
        evidence = (Evidence("dsn", f"Action: {action}: a report of success, not a failure"),)
        return Verdict(Kind.NONE, Reason.DELIVERED, None, None, f"message {action}", evidence=evidence)
    status_match = re.match(r"\s*([245]\.\d{1,3}\.\d{1,3})", status_field)
    code_match = re.match(r"\s*([45]\d\d)\b", status_field)  # some servers put a reply code here
    status = status_match.group(1) if status_match else None
    comment = status_field[status_match.end() if status_match else 0 :].strip(" ()")
    diag = re.sub(r"^[A-Za-z][\w-]*\s*;\s*", "", diagnostic or "")  # drop the type: "smtp; 550 …"
    quoted = find_status(diag)
    evidence = [Evidence("dsn", f"Action: {action}, Status: {status_field or 'none'}")]
    if quoted and (status is None or status.endswith(".0.0")):
        status = quoted
        evidence.append(Evidence("dsn", f"the generic status is refined by {quoted} in the Diagnostic-Code"))
    code = int(code_match.group(1)) if code_match else find_reply_code(diag)
    delayed = action == "delayed"
    if delayed:
        evidence.append(Evidence("dsn", "Action: delayed: the sender is still retrying"))
    stage, staged = find_stage(diag)
    if stage is None and context:
        stage, staged = find_stage(context)
    if staged is not None:
        evidence.append(staged)
    words = f"{diag}\n{comment}".strip()
    verdict = classify_failure(
        words, code=code, status=status, transient=delayed, stage=stage, policy=policy, evidence=evidence
    )
    if verdict.reason in (Reason.OTHER, Reason.POLICY) and context:
        evidence.append(Evidence("dsn", "the fields name no reason: the notification text decides"))
        fallback = classify_failure(
            f"{words}\n{context}",
            code=code,
            status=status,
            transient=delayed,
            stage=stage,
            policy=policy,
            evidence=evidence,
        )
        if fallback.reason not in (Reason.OTHER, Reason.POLICY) or verdict.reason is Reason.OTHER:
            verdict = fallback
    return verdict


def _lines_about(address: str, addresses: Iterable[str], text: str) -> str:
    """The lines of a bounce text from the one naming an address up to the next recipient's."""
    lowered = text.lower()
    at = lowered.find(address.lower())
    if at < 0:
        return ""
    start = lowered.rfind("\n", 0, at) + 1
    end = min(at + 500, len(text))
    for other in addresses:
        found = lowered.find(other.lower(), at + len(address))
        if other.lower() != address.lower() and 0 <= found < end:
            end = max(lowered.rfind("\n", 0, found) + 1, at + len(address))
    return text[start:end]


def _heuristic(
    msg: Message, notification: str, policy: Policy
) -> tuple[list[RecipientFailure], Verdict, Literal["heuristic", "flufl"]] | None:
    subject = _header_text(msg, "Subject")
    failed_header = [str(v) for v in msg.get_all("X-Failed-Recipients", [])]
    worded = _FAILURE_WORDS.search(notification) or _FAILURE_WORDS.search(subject)
    if failed_header:
        found = Evidence("format", "free-text bounce with X-Failed-Recipients")
    elif worded:
        found = Evidence("format", f"free-text bounce ('{worded.group(0)}')")
    elif _from_mail_system(msg):
        found = Evidence("format", "free-text report from a mail system (MAILER-DAEMON, postmaster)")
    elif _is_delivery_report(msg):
        found = Evidence("format", "a delivery-status report whose fields could not be read")
    else:
        return None
    delay = _DELAY_WORDS.search(notification) or _DELAY_WORDS.search(subject)
    transient = bool(delay)
    text = _TRANSLATED.sub("", notification)
    addresses, source = _failed_addresses(msg, text, failed_header)
    stage, staged = find_stage(text)
    head = [found] + (
        [Evidence("text", f"'{delay.group(0)}': a delay warning, still retrying")] if delay else []
    )
    head += [staged] if staged is not None else []
    whole = classify_failure(text, transient=transient, stage=stage, policy=policy, evidence=head)
    recipients = []
    for address in addresses:
        lines = " ".join(_lines_about(address, addresses, text).split())
        verdict = _recipient_verdict(address, addresses, text, transient, policy, head) or whole
        recipients.append(
            RecipientFailure(
                address=address,
                status=verdict.status,
                action="delayed" if transient else "failed",
                diagnostic=lines[:300] or None,
                verdict=verdict,
            )
        )
    return recipients, (overall_verdict(recipients) if recipients else whole), source


def _recipient_verdict(
    address: str, addresses: list[str], text: str, transient: bool, policy: Policy, head: list[Evidence]
) -> Verdict | None:
    """Classify the lines about one recipient; None when they name no reason."""
    lines = _lines_about(address, addresses, text)
    if not lines:
        return None
    stage, staged = find_stage(lines)
    if stage is None:
        stage, staged = find_stage(text)
    evidence = [e for e in head if e.rule != "stage"] + ([staged] if staged is not None else [])
    verdict = classify_failure(lines, transient=transient, stage=stage, policy=policy, evidence=evidence)
    return verdict if verdict.reason is not Reason.OTHER else None


def _failed_addresses(
    msg: Message, notification: str, failed_header: list[str]
) -> tuple[list[str], Literal["heuristic", "flufl"]]:
    """Failed recipients read from the text, checked against flufl.bounce.

    Where both find some, keep those both find plus those the text gives a reason for; where they find
    different ones, flufl's format-specific detectors win.
    """
    exim = [a for _, a in getaddresses([str(v) for v in failed_header]) if a]
    candidates = _text_addresses(msg, notification)
    if exim and all(a.lower() in {c.lower() for c in candidates} for a in exim):
        return _in_text_order(exim + candidates, notification), "heuristic"
    second = _flufl_opinion(msg)
    agreed = [a for a in candidates if a.lower() in second]
    source: Literal["heuristic", "flufl"] = "heuristic"
    if agreed:
        chosen = [
            a
            for a in candidates
            if a in agreed or _recipient_verdict(a, candidates, notification, False, DEFAULT_POLICY, [])
        ]
    elif candidates and not second:
        chosen = candidates
    else:
        chosen = list(second.values())
        source = "flufl" if chosen and not exim else "heuristic"
    return _in_text_order([*exim, *chosen], notification), source


def _in_text_order(addresses: list[str], text: str) -> list[str]:
    merged = {a.lower(): a for a in addresses}
    lowered = text.lower()

    def position(address: str) -> int:
        at = lowered.find(address.lower())
        return at if at >= 0 else len(lowered)

    return sorted(merged.values(), key=position)


def _flufl_opinion(msg: Message) -> dict[str, str]:
    """Recipients that flufl.bounce's detectors find, temporary or permanent, keyed by lower case."""
    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)  # it logs every detector that trips
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector tripping over an odd message leaves us without a second opinion
        return {}
    found = (a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a) for a in temporary | permanent)
    return {a.lower(): a for a in found}


def _text_addresses(msg: Message, text: str) -> list[str]:
    """Addresses named in a bounce text that are neither its own parties nor quoted header lines."""
    parties = {
        a.lower()
        for _, a in getaddresses(
            [
                str(v)
                for name in ("From", "To", "Cc", "Sender", "Reply-To", "Return-Path")
                for v in msg.get_all(name, [])
            ]
        )
    }
    parties |= {m.lower() for m in _MENTIONED_MESSAGE_ID.findall(text)}
    found: dict[str, str] = {}
    for line in text.splitlines():
        if _HEADER_LINE.match(line):
            continue
        for address in _ADDRESS.findall(line):
            address = _X400_PREFIX.sub("", address.rstrip("."))  # Exchange writes "dda:SMTP=a@b"
            key = address.lower()
            if key in parties or key.split("@")[0] in _DAEMON_LOCAL_PARTS:
                continue
            found.setdefault(key, address)
    return list(found.values())


def _from_mail_system(msg: Message) -> bool:
    """Sent by a mail server itself (MAILER-DAEMON, postmaster), which writes only delivery reports.

    A From of "<>" is the null sender (RFC 5321 4.5.5); a message with no From at all says nothing about its
    sender (clients and gateways drop it), so it is judged by its other headers and its words."""
    value = msg.get("From")
    name, address = parseaddr(_header_text(msg, "From"))
    local = address.split("@")[0].lower()
    if value is not None and not address and str(value).strip() in ("<>", ""):
        return True
    return local in _DAEMON_LOCAL_PARTS or "mail delivery" in name.lower()


_AUTOMATIC_DELETION = re.compile(r"automatic-action/[\w-]+\s*;\s*deleted\b", re.I)


def _deleted_automatically(part: Message) -> bool:
    """A disposition notification saying the message was deleted by an automatic action: how a Sieve
    'reject' (RFC 5429) or a delivery agent's refusal (Dovecot's over-quota reject) is reported, a refusal
    rather than a read receipt."""
    blocks = part.get_payload()
    fields = blocks if isinstance(blocks, list) else [HeaderParser().parsestr(str(blocks))]
    return any(_AUTOMATIC_DELETION.search(_field(block, "Disposition") or "") for block in fields)


def _is_delivery_report(msg: Message) -> bool:
    """A multipart/report of report-type delivery-status (RFC 3462): a report about delivery, even when its
    machine-readable part is missing or unreadable."""
    return msg.get_content_type() == "multipart/report" and (
        str(msg.get_param("report-type") or "").lower() in ("delivery-status", "global-delivery-status")
    )


def overall_verdict(recipients: list[RecipientFailure]) -> Verdict:
    """The worst verdict among the recipients: one hard failure makes the whole report hard."""
    rank = {Kind.HARD: 0, Kind.SOFT: 1, Kind.NONE: 2}
    return min((r.verdict for r in recipients), key=lambda v: rank[v.kind])


def _success(msg: Message, text: str) -> Evidence | None:
    """A free-text report of success (Exchange "Delivered:", "Relayed:", return receipts)."""
    subject = _header_text(msg, "Subject")
    found = _SUCCESS_WORDS.search(subject) or _SUCCESS_WORDS.search(text[:2000])
    if found is None or _FAILURE_WORDS.search(_SUCCESS_WORDS.sub("", text[:2000])):
        return None
    return Evidence("success", f"'{found.group(0)}': a report of delivery, not a failure")


def _auto_reply(msg: Message, text: str) -> Evidence | None:
    """RFC 3834 and the de-facto headers of vacation responders, or an out-of-office in so many words."""
    # str(): a header with undecodable bytes comes back as a `Header`, not a string (compat32).
    auto_submitted = str(msg.get("Auto-Submitted") or "").strip().lower()
    precedence = str(msg.get("Precedence") or "").strip().lower()
    if auto_submitted.startswith("auto-replied"):
        return Evidence("auto-reply", f"Auto-Submitted: {auto_submitted} (RFC 3834)")
    for header in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Response-Suppress"):
        if msg.get(header) is not None and header != "X-Auto-Response-Suppress":
            return Evidence("auto-reply", f"{header} header")
    if precedence == "auto_reply":
        return Evidence("auto-reply", "Precedence: auto_reply")
    subject = _header_text(msg, "Subject")
    if (m := _AUTO_REPLY_SUBJECT.search(subject)) is not None:
        return Evidence("auto-reply", f"subject '{m.group(0)}'")
    if (m := _AUTO_REPLY_BODY.search(text[:800])) is not None:
        return Evidence("auto-reply", f"'{m.group(0)}'")
    if auto_submitted.startswith("auto-generated") and precedence in ("bulk", "junk", "list"):
        return None
    if precedence in ("bulk", "junk") and (m := _THANKS.search(text[:400])) is not None:
        return Evidence("auto-reply", f"Precedence: {precedence} and '{m.group(0)}'")
    return None


def _enclosed_originals(msg: Message) -> list[Message]:
    """Header blocks of the bounced original: message/rfc822 or text/rfc822-headers parts, found once and
    kept with the message."""
    found: list[Message] | None = getattr(msg, "_estafeta_enclosed", None)
    if found is None:
        found = list(_find_enclosed(msg))
        msg._estafeta_enclosed = found  # type: ignore[attr-defined]
    return found


def _find_enclosed(msg: Message) -> Iterator[Message]:
    for part in _parts(msg, into_enclosed=True):
        if part is msg:
            continue
        if part.get_content_type() == "message/rfc822":
            payload = part.get_payload()
            enclosed = payload[0] if isinstance(payload, list) and payload else None
            if enclosed is not None and _delivery_status(enclosed) is None:
                yield enclosed
        elif part.get_content_type() in ("text/rfc822-headers", "message/rfc822-headers"):
            payload = part.get_payload()
            if isinstance(payload, list):
                yield from payload
            else:
                yield HeaderParser().parsestr(_decoded_text(part))


def enclosed_originals(msg: Message) -> list[Message]:
    """Header blocks of every enclosed original (message/rfc822, text/rfc822-headers), outermost first."""
    return list(_enclosed_originals(msg))


def texts(msg: Message, *, into_enclosed: bool, markup: bool = False) -> Iterator[tuple[str, str]]:
    """(subtype, decoded text) of each text part, HTML reduced to text unless `markup` (links live in its
    attributes); optionally inside enclosed messages too (a forwarded original's body)."""
    for part in _parts(msg, into_enclosed=into_enclosed):
        if part.get_content_maintype() == "text" and not part.is_multipart():
            yield part.get_content_subtype(), _decoded_text(part, markup=markup)


def enclosed_original(msg: Message) -> Message | None:
    """Headers of the bounced or reported original: its message/rfc822 or text/rfc822-headers part."""
    found = _enclosed_originals(msg)
    return found[0] if found else None


def _enclosed_header(msg: Message, *names: str) -> str | None:
    for enclosed in _enclosed_originals(msg):
        for name in names:
            if enclosed.get(name):
                return " ".join(str(enclosed[name]).split())
    return None


def original_message_id(msg: Message) -> str | None:
    """Message-ID of the bounced or reported message: its enclosed headers', else as the text quotes it."""
    found = _enclosed_header(msg, "Message-ID")
    if found:
        return found
    for part in _parts(msg, into_enclosed=True):
        if part.get_content_maintype() == "text":
            match = _MENTIONED_MESSAGE_ID.search(_decoded_text(part))
            if match:
                return f"<{match.group(1)}>"
    return None
