"""Read what people mail to `abuse@` and `postmaster@`: what they report, in their own words, and every
trace of the message they report that could name the sender.

A feedback-loop report (ARF) is a complaint and is read by `estafeta.bounces.arf`. Everything else is a
person writing, usually forwarding or quoting the message: the original may be attached (message/rfc822,
text/rfc822-headers) or pasted into the body, headers and all. The traces looked for are the ones this
platform writes into every message — the VERP return path, the Message-ID, the Feedback-ID, the DKIM
signature's d= domain and the tracking links — wherever they appear; the caller checks each against what
was really sent (signatures, the message store), so a forged trace matches nothing.

The category comes from the reporter's own words (subject and text before the quoted message), never from
the quoted message, whose words ("verify your password") are what is being reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from estafeta.bounces.dsn import enclosed_originals, parse_message, texts
from estafeta.ids import parse_id

EXCERPT_CHARS = 2000

CATEGORIES = ("phishing", "malware", "spam", "other")
# The reporter's words that say what kind of abuse it is, most severe first.
_CATEGORY_WORDS = (
    (
        "phishing",
        re.compile(
            r"phish|credential|password[- ]harvest|steal(?:s|ing)? (?:passwords|logins|credentials)"
            r"|fake (?:login|sign[- ]in|bank)|impersonat|spoof(?:ed|ing)? (?:our|my|a) (?:bank|brand|company)"
            r"|fraud|scam",
            re.I,
        ),
    ),
    (
        "malware",
        re.compile(r"malware|virus|trojan|ransomware|malicious (?:attachment|link|file)|infected", re.I),
    ),
    (
        "spam",
        re.compile(
            r"spam|unsolicited|junk|never (?:signed up|subscribed|opted in|asked)"
            r"|didn'?t (?:sign up|subscribe)|did not (?:sign up|subscribe)|unsubscribe|opt[- ]?out"
            r"|bulk mail|stop (?:sending|emailing)",
            re.I,
        ),
    ),
)
# Where the reporter's words end and the quoted or forwarded message begins.
_QUOTED = re.compile(
    r"^\s*(?:>|-{2,}\s*(?:original message|forwarded message)|begin forwarded message"
    r"|on .{1,200} wrote:\s*$|from:\s|received:\s|return-path:\s)",
    re.I | re.M,
)
_VERP = re.compile(r"\bbounces\+([0-9a-z]{1,13}-[0-9a-f]{10})@", re.I)
_MESSAGE_ID_LINE = re.compile(r"^[>\s]*message-id:\s*(<[^<>\s]{3,400}>)", re.I | re.M)
_FEEDBACK_ID_LINE = re.compile(r"^[>\s]*feedback-id:\s*([!-~]{1,400})", re.I | re.M)
_DKIM_DOMAIN = re.compile(r"(?:^|[;\s])d=([A-Za-z0-9.-]{1,253})\s*(?:;|$)", re.M)
_DKIM_LINE = re.compile(r"^[>\s]*dkim-signature:(.*(?:\n[>\s]*[ \t].*)*)", re.I | re.M)
_TRACKING = re.compile(r"/t/([co])/([A-Za-z0-9_\-.]{8,2000})")
_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


@dataclass(frozen=True)
class Traces:
    """What in a report could name the message and sender it is about (unchecked)."""

    verp_tokens: tuple[str, ...] = ()
    message_ids: tuple[str, ...] = ()
    feedback_ids: tuple[str, ...] = ()
    dkim_domains: tuple[str, ...] = ()
    tracking_tokens: tuple[tuple[str, str], ...] = ()  # ("open" | "click", token)


@dataclass(frozen=True)
class HumanReport:
    """A person's abuse report: who wrote it, about what, what kind of abuse, and the traces it carries."""

    reporter: str | None
    subject: str
    category: str  # phishing, malware, spam, other
    excerpt: str  # the reporter's own words, shortened
    traces: Traces


def read_report(raw: bytes | Message) -> HumanReport:
    """Read one message sent to an abuse address (see the module docstring)."""
    msg = parse_message(raw) if isinstance(raw, bytes) else raw
    subject = " ".join(str(msg.get("Subject") or "").split())
    sender = _ADDRESS.search(str(msg.get("From") or ""))
    words = _reporter_words(msg)
    return HumanReport(
        reporter=sender.group(0) if sender else None,
        subject=subject[:500],
        category=_category(f"{subject}\n{words}"),
        excerpt=words[:EXCERPT_CHARS],
        traces=traces(msg),
    )


def _reporter_words(msg: Message) -> str:
    """The text the reporter wrote: the first plain (else HTML) part outside enclosed messages, cut where
    the quoted message starts."""
    own = list(texts(msg, into_enclosed=False))
    chosen = next((t for sub, t in own if sub == "plain"), None) or next((t for _, t in own), "")
    cut = _QUOTED.search(chosen)
    return " ".join((chosen[: cut.start()] if cut else chosen).split())


def _category(words: str) -> str:
    return next((name for name, pattern in _CATEGORY_WORDS if pattern.search(words)), "other")


def traces(msg: Message) -> Traces:
    """Every trace of a message this platform sent, in the enclosed originals' headers and in all text."""
    verp: dict[str, None] = {}
    message_ids: dict[str, None] = {}
    feedback_ids: dict[str, None] = {}
    dkim: dict[str, None] = {}
    tracking: dict[tuple[str, str], None] = {}
    for original in enclosed_originals(msg):
        for name in ("Return-Path", "Sender", "Errors-To"):
            for value in original.get_all(name, []):
                verp.update(dict.fromkeys(m.lower() for m in _VERP.findall(str(value))))
        if original.get("Message-ID"):
            message_ids["".join(str(original["Message-ID"]).split())] = None
        for value in original.get_all("Feedback-ID", []):
            feedback_ids[" ".join(str(value).split())] = None
        for value in original.get_all("DKIM-Signature", []):
            dkim.update(dict.fromkeys(d.lower().rstrip(".") for d in _DKIM_DOMAIN.findall(str(value))))
    for _, text in texts(msg, into_enclosed=True, markup=True):
        verp.update(dict.fromkeys(m.lower() for m in _VERP.findall(text)))
        message_ids.update(dict.fromkeys(_MESSAGE_ID_LINE.findall(text)))
        feedback_ids.update(dict.fromkeys(f.strip() for f in _FEEDBACK_ID_LINE.findall(text)))
        for signature in _DKIM_LINE.findall(text):
            unfolded = re.sub(r"\n[>\s]*", " ", signature)
            dkim.update(dict.fromkeys(d.lower().rstrip(".") for d in _DKIM_DOMAIN.findall(unfolded)))
        for kind, token in _TRACKING.findall(text):
            tracking[("open" if kind == "o" else "click", token)] = None
    return Traces(tuple(verp), tuple(message_ids), tuple(feedback_ids), tuple(dkim), tuple(tracking))


def feedback_account(feedback_id: str | None) -> int | None:
    """The account in a Feedback-ID this platform wrote (`campaign:account:stream:sender`)."""
    fields = (feedback_id or "").split(":")
    return parse_id(fields[1]) if len(fields) == 4 else None
