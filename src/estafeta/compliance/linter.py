"""The sender-guideline linter: what mailbox providers (Gmail, Yahoo, Microsoft) ask of bulk and transactional
mail, checked on one message before it leaves.

It runs at accept time on every message (settings `lint.mode`: `warn` reports, `block` refuses errors) and
from the command line on `.eml` files (`estafeta lint`). Each finding names its rule, its severity, the
field it is about and what to change. The rules are listed in `RULES` and in docs/compliance.md.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from email import message_from_bytes, policy
from email.errors import MessageError
from email.header import decode_header, make_header
from email.utils import getaddresses
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import urlsplit

from estafeta.compliance.html_check import html_problems
from estafeta.compliance.idn import check_domain
from estafeta.compose import ComposeError, check_message
from estafeta.compose.headers import header_cache

Severity = Literal["error", "warning"]
Stream = Literal["transactional", "broadcast"]

RULES: dict[str, str] = {
    "rfc5322": "the message is valid RFC 5322: CRLF lines of at most 998 octets, well-formed header fields",
    "message-id": "a Message-ID header is present",
    "html": "the HTML part is well-formed (no unclosed or stray tags, no repeated attributes)",
    "precedence-bulk": "broadcast mail says `Precedence: bulk`",
    "list-unsubscribe": "broadcast mail has a List-Unsubscribe header with an https URI",
    "one-click": "broadcast mail has `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058)",
    "unsubscribe-link": "broadcast mail shows an unsubscribe link in its body",
    "from-per-category": "each category (stream) of mail keeps one From domain",
    "truthful-from": "the From domain is the authenticated (DKIM-signing) domain or aligned with it",
    "idn": "IDN domains in From, Sender, Reply-To, the envelope and links are UTS #39 highly restrictive "
    "and not confusable with an ASCII domain",
    "promotional-transactional": "the transactional stream carries no promotional content",
}
ONE_CLICK = "List-Unsubscribe=One-Click"
_BULK = ("bulk", "list")
_URI = re.compile(r"<([^<>]*)>")
_TEXT_URL = re.compile(r"https?://[^\s<>\"')\]]+", re.IGNORECASE)
_UNSUBSCRIBE_WORDS = re.compile(
    r"unsubscri|opt[\s-]?out|abmelden|d[ée]sabonner|d[ée]sinscri|darse de baja|cancelar suscri", re.IGNORECASE
)
# name -> (a word every match contains, the pattern). The patterns run on the lower-cased body and only
# when their word occurs: a leading \b stops the regex engine from skipping ahead to a literal.
_PROMOTIONAL = {
    "a percentage off": ("% off", re.compile(r"\b\d{1,2}\s?% off\b")),
    "'sale'": ("sale", re.compile(r"\bsale\b")),
    "'discount'": ("discount", re.compile(r"\bdiscount")),
    "'coupon'": ("coupon", re.compile(r"\bcoupons?\b")),
    "'promo code'": ("promo", re.compile(r"\bpromo(?:tional)? codes?\b")),
    "'limited time'": ("limited", re.compile(r"\blimited[- ]time\b")),
    "'buy now' / 'shop now'": (" now", re.compile(r"\b(?:buy|shop|order) now\b")),
    "'free shipping'": ("free shipping", re.compile(r"\bfree shipping\b")),
    "'special offer'": ("special offer", re.compile(r"\bspecial offers?\b")),
    "'black friday'": ("black friday", re.compile(r"\bblack friday\b")),
    "'clearance'": ("clearance", re.compile(r"\bclearance\b")),
}
PROMOTIONAL_THRESHOLD = 2


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    message: str
    field: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class LintContext:
    """What is known about a message besides its bytes.

    `stream` None means: decide from the headers (Precedence, List-Unsubscribe, List-Id mark list mail).
    `authenticated_domain` is the DKIM signing domain (None: the DKIM-Signature's d=, if any).
    `category_from_domain` is the From domain the account set for the message's stream.
    """

    stream: Stream | None = None
    authenticated_domain: str | None = None
    envelope_from: str | None = None
    category_from_domain: str | None = None


class _Headers:
    """A message's header fields by case-insensitive name, unfolded: a plain split of the header section,
    cheap enough to run on every accepted message (the stdlib's header objects are not)."""

    def __init__(self, header_section: bytes) -> None:
        self._fields: dict[str, list[str]] = {}
        name = None
        for line in header_section.decode("utf-8", "replace").split("\r\n"):
            if line[:1] in (" ", "\t") and name is not None:
                self._fields[name][-1] += " " + line.strip()
            elif ":" in line:
                field, _, value = line.partition(":")
                name = field.strip().lower()
                self._fields.setdefault(name, []).append(value.strip())

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._fields

    def get(self, name: str) -> str | None:
        values = self._fields.get(name.lower())
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return self._fields.get(name.lower(), [])


def _header_section(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    return raw if end < 0 else raw[: end + 2]


@dataclass(frozen=True)
class _Facts:
    headers: _Headers
    html: str | None
    text: str | None

    @functools.cached_property
    def bodies(self) -> _BodyFacts:
        return _body_facts(self.html, self.text)

    @property
    def links(self) -> tuple[tuple[str, str], ...]:
        """(href, label) of every link in the bodies."""
        return self.bodies.links


@dataclass(frozen=True)
class _BodyFacts:
    """What the linter reads from a message's bodies with an HTML parser, which costs more than the rest."""

    html_problems: tuple[str, ...]
    links: tuple[tuple[str, str], ...]


def _read_bodies(html: str | None, text: str | None) -> _BodyFacts:
    return _BodyFacts(tuple(html_problems(html)) if html else (), tuple(_links(html, text)))


# Bulk mail repeats one template (tracking is added after linting), so what its bodies hold is remembered;
# bodies larger than _CACHED_BODY_CHARS are read every time rather than kept.
_CACHED_BODY_CHARS = 128 * 1024
_cached_bodies = functools.lru_cache(maxsize=128)(_read_bodies)


def _body_facts(html: str | None, text: str | None) -> _BodyFacts:
    if len(html or "") + len(text or "") > _CACHED_BODY_CHARS:
        return _read_bodies(html, text)
    return _cached_bodies(html, text)


def is_one_click_uri(uri: str) -> bool:
    """An https URI, or (the sandbox, which has no public certificates) http to a loopback address."""
    parts = urlsplit(uri)
    if parts.scheme == "https" and parts.hostname:
        return True
    if parts.scheme != "http" or not parts.hostname:
        return False
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return parts.hostname == "localhost"


def list_unsubscribe_uris(value: str) -> list[str]:
    return [uri.strip() for uri in _URI.findall(" ".join(value.split()))]


class _Anchors(HTMLParser):
    """Links of an HTML body: (href, label)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self._open: list[tuple[str, list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open.append((dict(attrs).get("href") or "", []))

    def handle_data(self, data: str) -> None:
        for _, label in self._open:
            label.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open:
            href, label = self._open.pop()
            self.links.append((href.strip(), " ".join("".join(label).split())))

    def close(self) -> None:
        super().close()
        while self._open:
            self.handle_endtag("a")


def _links(html: str | None, text: str | None) -> list[tuple[str, str]]:
    links: list[tuple[str, str]] = []
    if html:
        anchors = _Anchors()
        anchors.feed(html)
        anchors.close()
        links.extend(anchors.links)
    if text:
        for line in text.splitlines():
            links.extend((url, line) for url in _TEXT_URL.findall(line))
    return links


def _header(facts: _Facts, name: str) -> str | None:
    value = facts.headers.get(name)
    return None if value is None else " ".join(value.split())


def _decoded(value: str | None) -> str | None:
    """A header value with RFC 2047 encoded words decoded (the Subject of a non-ASCII message)."""
    if value is None or "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, MessageError):  # unknown or malformed charsets, broken encoded words
        return value


def _domains(facts: _Facts, name: str) -> list[str]:
    """The domains of the addresses in a header (every occurrence of it)."""
    values = tuple(facts.headers.get_all(name))
    return list(_address_domains(values)) if values else []


@header_cache
def _address_domains(values: tuple[str, ...]) -> tuple[str, ...]:
    """The stdlib's address parsing is slow and senders repeat their From and Reply-To, hence the cache."""
    addresses = [address for _, address in getaddresses(values) if "@" in address]
    return tuple(address.rpartition("@")[2].rstrip(">").lower() for address in addresses)


def _stream(facts: _Facts, context: LintContext) -> Stream:
    if context.stream is not None:
        return context.stream
    precedence = (_header(facts, "Precedence") or "").lower()
    if precedence in _BULK or "List-Unsubscribe" in facts.headers or "List-Id" in facts.headers:
        return "broadcast"
    return "transactional"


def _broadcast_rules(facts: _Facts) -> list[Finding]:
    findings = []
    precedence = _header(facts, "Precedence")
    if (precedence or "").lower() != "bulk":
        found = f"found `Precedence: {precedence}`" if precedence else "there is none"
        findings.append(
            Finding(
                "precedence-bulk",
                "error",
                f"broadcast mail must say `Precedence: bulk` so receivers never auto-reply to it; {found}",
                "headers.Precedence",
            )
        )
    value = _header(facts, "List-Unsubscribe")
    uris = list_unsubscribe_uris(value or "")
    web = [uri for uri in uris if is_one_click_uri(uri)]
    if value is None:
        findings.append(
            Finding(
                "list-unsubscribe",
                "error",
                "broadcast mail needs a List-Unsubscribe header with an https URI (and ideally a mailto: "
                "one), e.g. `List-Unsubscribe: <https://example.com/u/TOKEN>, "
                "<mailto:unsub+TOKEN@example.com>`",
                "headers.List-Unsubscribe",
            )
        )
    elif not web:
        findings.append(
            Finding(
                "list-unsubscribe",
                "error",
                f"List-Unsubscribe has no https URI ({value!r}); Gmail and Yahoo require one for one-click "
                "unsubscribe (RFC 8058)",
                "headers.List-Unsubscribe",
            )
        )
    post = _header(facts, "List-Unsubscribe-Post")
    if value is not None and post != ONE_CLICK:
        found = f"found {post!r}" if post else "it is missing"
        findings.append(
            Finding(
                "one-click",
                "error",
                f"broadcast mail needs `List-Unsubscribe-Post: {ONE_CLICK}` beside the https URI so mailbox "
                f"providers can unsubscribe with one click (RFC 8058); {found}",
                "headers.List-Unsubscribe-Post",
            )
        )
    links = facts.links
    if not any(
        href in web or _UNSUBSCRIBE_WORDS.search(href) or _UNSUBSCRIBE_WORDS.search(label)
        for href, label in links
    ):
        findings.append(
            Finding(
                "unsubscribe-link",
                "error",
                "the body shows no unsubscribe link; broadcast mail must offer a visible one (a link to the "
                "List-Unsubscribe https URI, or one labelled 'unsubscribe')",
                "html" if facts.html else "text",
            )
        )
    return findings


def _promotional(facts: _Facts) -> list[Finding]:
    body = " ".join(filter(None, [_decoded(_header(facts, "Subject")), facts.text, facts.html])).lower()
    hits = [name for name, (word, pattern) in _PROMOTIONAL.items() if word in body and pattern.search(body)]
    marked = [name for name in ("List-Unsubscribe", "List-Id") if name in facts.headers]
    if (_header(facts, "Precedence") or "").lower() in _BULK:
        marked.append("Precedence: bulk")
    if len(hits) < PROMOTIONAL_THRESHOLD and not marked:
        return []
    signs = ", ".join(hits + [f"the {m} header" for m in marked])
    return [
        Finding(
            "promotional-transactional",
            "warning",
            f"this transactional message reads as promotional ({signs}); send marketing through the "
            "broadcast stream so receipts and password resets keep their own reputation",
            "stream",
        )
    ]


def _aligned(domain: str, authenticated: str) -> bool:
    domain, authenticated = domain.lower().rstrip("."), authenticated.lower().rstrip(".")
    return (
        domain == authenticated
        or domain.endswith("." + authenticated)
        or authenticated.endswith("." + domain)
    )


def _dkim_domain(facts: _Facts) -> str | None:
    signature = _header(facts, "DKIM-Signature")
    match = re.search(r"(?:^|;)\s*d\s*=\s*([^;\s]+)", signature or "")
    return match.group(1) if match else None


def _identity_rules(facts: _Facts, context: LintContext, stream: Stream) -> list[Finding]:
    findings = []
    from_domains = _domains(facts, "From")
    from_domain = from_domains[0].lower() if from_domains else None
    authenticated = context.authenticated_domain or _dkim_domain(facts)
    if from_domain and authenticated and not _aligned(from_domain, authenticated):
        findings.append(
            Finding(
                "truthful-from",
                "error",
                f"the From domain {from_domain} is not the authenticated domain {authenticated} (nor a "
                "parent or subdomain of it); receivers take that for spoofing (DMARC alignment)",
                "headers.From",
            )
        )
    expected = context.category_from_domain
    if from_domain and expected and from_domain != expected.lower():
        findings.append(
            Finding(
                "from-per-category",
                "error",
                f"{stream} mail of this account is sent From {expected}; this message uses {from_domain}. "
                "Keep one From domain per category so each builds its own reputation",
                "headers.From",
            )
        )
    return findings


def _idn_rules(facts: _Facts, context: LintContext) -> list[Finding]:
    checks: list[tuple[str, str]] = [
        (f"headers.{name}", domain)
        for name in ("From", "Sender", "Reply-To")
        for domain in _domains(facts, name)
    ]
    if context.envelope_from and "@" in context.envelope_from:
        checks.append(("envelope.mail_from", context.envelope_from.rpartition("@")[2]))
    for href, _ in facts.links:
        parts = urlsplit(href)
        if parts.scheme in ("http", "https") and parts.hostname:
            checks.append(("links", parts.hostname))
        elif parts.scheme == "mailto" and "@" in parts.path:
            checks.append(("links", parts.path.rpartition("@")[2]))
    findings, seen = [], set()
    for field, domain in checks:
        if (field, domain) in seen or (domain.isascii() and "xn--" not in domain.lower()):
            continue
        seen.add((field, domain))
        findings.extend(
            Finding("idn", "error", f"{problem.domain}: {problem.reason}", field)
            for problem in check_domain(domain)
        )
    return findings


def _lint(facts: _Facts, context: LintContext) -> list[Finding]:
    findings: list[Finding] = []
    if "Message-ID" not in facts.headers:
        findings.append(
            Finding(
                "message-id",
                "error",
                "there is no Message-ID header; receivers distrust mail without one",
                "headers.Message-ID",
            )
        )
    if facts.html:
        problems = facts.bodies.html_problems
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            findings.append(
                Finding(
                    "html",
                    "warning",
                    "the HTML is not well-formed: " + "; ".join(problems[:3]) + more,
                    "html",
                )
            )
    stream = _stream(facts, context)
    if stream == "broadcast":
        findings.extend(_broadcast_rules(facts))
    else:
        findings.extend(_promotional(facts))
    findings.extend(_identity_rules(facts, context, stream))
    findings.extend(_idn_rules(facts, context))
    return findings


def lint_composed(raw: bytes, html: str | None, text: str | None, context: LintContext) -> list[Finding]:
    """Lint a message the platform composed: only its header section is read, the bodies are given."""
    return _lint(_Facts(_Headers(_header_section(raw)), html, text), context)


# A header field line, or the continuation of one, as the stdlib's feed parser takes them.
_FIELD_LINE = re.compile(rb"[!-9;-~]+:|[ \t]")
# The Content-Type of a single-part text message as nearly every sender writes it.
_SIMPLE_TEXT_TYPE = re.compile(
    rb'[ \t]*text/(plain|html)[ \t]*(?:;[ \t]*charset[ \t]*=[ \t]*("?)([A-Za-z0-9_.:+-]+)\2[ \t]*)?', re.I
)
_IDENTITY_ENCODINGS = frozenset({b"", b"7bit", b"8bit", b"binary"})
_BODY_FIELDS = frozenset({b"content-type", b"content-transfer-encoding", b"content-disposition"})


def message_bodies(raw: bytes) -> tuple[str | None, str | None]:
    """The first HTML and the first plain-text part that are not attachments, decoded (None: no such part,
    or a charset nobody knows)."""
    return _single_text_bodies(raw) or _parsed_bodies(raw)


def _single_text_bodies(raw: bytes) -> tuple[str | None, str | None] | None:
    """`_parsed_bodies` of a single-part text message (header lines CRLF only, a simple Content-Type, no
    transfer encoding, no Content-Disposition) without the stdlib's parser, which took most of the time
    of linting one; None for any other message."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = raw[:end].split(b"\r\n")
    if any(b"\r" in line or b"\n" in line or _FIELD_LINE.match(line) is None for line in lines):
        return None
    if lines[0][:1] in (b" ", b"\t"):
        return None
    values: dict[bytes, list[bytes]] = {}
    for line in lines:
        if line[:1] not in (b" ", b"\t"):
            name, _, value = line.partition(b":")
            if name.lower() in _BODY_FIELDS:
                values.setdefault(name.lower(), []).append(value)
        elif name.lower() in _BODY_FIELDS:
            return None  # folded: left to the parser
    types = values.get(b"content-type", [b"text/plain"])
    encodings = values.get(b"content-transfer-encoding", [b""])
    simple = _SIMPLE_TEXT_TYPE.fullmatch(types[0])
    if (
        len(types) > 1
        or simple is None
        or len(encodings) > 1
        or encodings[0].strip(b" \t").lower() not in _IDENTITY_ENCODINGS
        or b"content-disposition" in values
    ):
        return None
    charset = (simple.group(3) or b"utf-8").decode("ascii").lower()
    try:
        body = raw[end + 4 :].decode(charset, "replace")
    except LookupError:  # a charset nobody knows
        return None, None
    return (body, None) if simple.group(1).lower() == b"html" else (None, body)


def _parsed_bodies(raw: bytes) -> tuple[str | None, str | None]:
    """`message_bodies` through the stdlib's parser: any message."""
    found: dict[str, str] = {}
    for part in message_from_bytes(raw, policy=policy.compat32).walk():
        subtype = part.get_content_subtype()
        if part.get_content_maintype() != "text" or subtype not in ("html", "plain") or subtype in found:
            continue
        if (part.get("Content-Disposition") or "").lower().startswith("attachment"):
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            try:
                found[subtype] = payload.decode(part.get_content_charset() or "utf-8", "replace")
            except LookupError:  # an unknown charset
                continue
    return found.get("html"), found.get("plain")


def lint_raw(
    raw: bytes,
    context: LintContext | None = None,
    *,
    checked: bool = False,
    bodies: tuple[str | None, str | None] | None = None,
) -> list[Finding]:
    """Lint a message as it would go on the wire (an `.eml` file, a message relayed over SMTP); `checked`
    when its RFC 5322 structure was checked already, `bodies` when its (HTML, text) were read already."""
    context = context or LintContext()
    findings = []
    if not checked:
        try:
            check_message(raw)
        except ComposeError as exc:
            findings.append(Finding("rfc5322", "error", exc.reason, exc.field))
    html, text = bodies if bodies is not None else message_bodies(raw)
    return findings + _lint(_Facts(_Headers(_header_section(raw)), html, text), context)


def stream_of(raw: bytes) -> Stream:
    """The category a ready-made message belongs to, judged from its headers."""
    return _stream(_Facts(_Headers(_header_section(raw)), None, None), LintContext())


def lint_files(
    files: Iterable[tuple[str, bytes]], stream: Stream | None = None
) -> list[tuple[str, list[Finding]]]:
    """Lint several messages; within each category, every message must keep the first one's From domain."""
    results = []
    first_from: dict[str, tuple[str, str]] = {}
    for name, raw in files:
        category = stream or stream_of(raw)
        domains = _domains(_Facts(_Headers(_header_section(raw)), None, None), "From")
        context = LintContext(stream=category)
        if domains:
            first = first_from.setdefault(category, (name, domains[0].lower()))
            if first[0] != name:
                context = LintContext(stream=category, category_from_domain=first[1])
        results.append((name, lint_raw(raw, context)))
    return results


def errors(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]
