"""Properties of addresses, headers and MIME composition over generated input (hypothesis).

Whatever a caller sends, composing either refuses it with the documented error (`AddressError`,
`ComposeError`) or builds a message that is RFC 5322-clean (CRLF lines of at most 998 octets, no header
injected) and reads back as what was asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.parser import Parser

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from estafeta.compose import Address, AddressError, Attachment, ComposeError, Draft, compose, parse_address
from estafeta.compose.addresses import _plain_address, _validated
from estafeta.compose.headers import (
    MAX_LINE_OCTETS,
    _address_list,
    _check_line_structure,
    _parsed_address_list,
    check_custom_headers,
    check_message,
    fold_words,
    header_message,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SENDER = Address("hello@acme.test", "Acme")

local_parts = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,20}[a-z0-9]", fullmatch=True).filter(
    lambda s: ".." not in s
)
domains = st.from_regex(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?\.){1,3}(?:com|net|test|org)", fullmatch=True
)
display_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=30)


@given(st.text(max_size=200))
def test_parsing_any_text_gives_an_address_or_an_address_error(text: str) -> None:
    try:
        address = parse_address(text)
    except AddressError as exc:
        assert exc.reason
    else:
        assert "@" in address.email and address.email == address.email.strip()
        assert not any(c in address.display_name for c in "\r\n")


plain_local_parts = st.one_of(
    st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,80}", fullmatch=True),
    st.sampled_from(["Postmaster", "ABUSE", "webmaster", "no-reply", "a" * 64, "b" * 200]),
)
plain_domains = st.one_of(
    st.from_regex(r"[A-Za-z0-9.-]{1,70}", fullmatch=True),
    domains,
    st.sampled_from(
        [
            "xn--bcher-kva.test",
            "Gmail.TEST",
            "localhost",
            "x.invalid",
            "a-.test",
            ("d" * 63 + ".") * 3 + "com",
        ]
    ),
)


@settings(max_examples=500)
@given(plain_local_parts, plain_domains)
def test_a_plain_address_is_read_from_its_domain_as_the_whole_validation_reads_it(
    local: str, domain: str
) -> None:
    address = f"{local}@{domain}"
    fast = _plain_address(address)
    try:
        whole: str | None = _validated(address)
    except AddressError:
        whole = None
    assert fast is None or fast == whole


@given(display_names, local_parts, domains)
def test_an_address_reads_back_from_its_header_form(name: str, local: str, domain: str) -> None:
    try:
        address = Address(f"{local}@{domain}", name.strip())
    except AddressError:
        assume(False)
    again = parse_address(address.header_value())
    assert again.email == address.email


header_names = st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True)


@given(st.dictionaries(st.text(max_size=30), st.text(max_size=200), max_size=5))
def test_custom_headers_are_refused_or_kept_on_their_own_line(headers: dict[str, str]) -> None:
    try:
        checked = check_custom_headers(headers)
    except ComposeError as exc:
        assert exc.field.startswith("headers.")
        return
    for name, value in checked:
        assert ":" not in name and "\r" not in value and "\n" not in value


@given(header_names, st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=3000))
def test_folding_keeps_every_word_and_the_line_limit(name: str, value: str) -> None:
    try:
        folded = fold_words(name, value)
    except ComposeError:
        assert any(len(word) > MAX_LINE_OCTETS - len(name) - 2 for word in value.split())
        return
    assert folded.replace("\n", "").split() == value.split() or not value.split()
    assert all(len(line) <= MAX_LINE_OCTETS for line in f"{name}: {folded}".split("\n"))


texts = st.text(st.characters(codec="utf-8"), max_size=2000)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=st.text(max_size=300),
    text=st.one_of(st.none(), texts),
    html=st.one_of(st.none(), texts),
    headers=st.dictionaries(header_names, st.text(max_size=300), max_size=3),
    recipients=st.lists(st.tuples(local_parts, domains), min_size=1, max_size=5),
    stream=st.sampled_from(["transactional", "broadcast"]),
)
def test_composing_refuses_with_a_compose_error_or_builds_a_clean_message(
    subject: str,
    text: str | None,
    html: str | None,
    headers: dict[str, str],
    recipients: list[tuple[str, str]],
    stream: str,
) -> None:
    draft = Draft(
        from_=SENDER,
        to=[Address(f"{local}@{domain}") for local, domain in recipients],
        subject=subject,
        text=text,
        html=html,
        headers=headers,
        stream=stream,  # type: ignore[arg-type]
    )
    try:
        composed = compose(draft, message_id="prop1", now=NOW, feedback_id="c:1:broadcast:estafeta")
    except ComposeError as exc:
        assert exc.field and exc.reason
        return
    raw = composed.raw
    lines = raw.split(b"\r\n")
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= MAX_LINE_OCTETS for line in lines)
    check_message(raw)  # the relay's own RFC 5322 checks accept it
    parsed = message_from_bytes(raw, policy=policy.default)
    assert " ".join(str(parsed["Subject"]).split()) == " ".join(subject.split())
    assert {name.lower() for name in headers} <= {key.lower() for key in parsed}
    assert len(parsed.get_all("From")) == 1 and parsed.get_all("Bcc") is None
    if text and not html:  # the body reads back as written, line breaks aside (CRLF on the wire)
        body = parsed.get_body(("plain",))
        assert body is not None
        assert body.get_content().splitlines() == text.splitlines()


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.text(max_size=60),
            st.binary(max_size=300),
            st.one_of(st.sampled_from(["application/pdf", "image/png", "text/plain"]), st.text(max_size=30)),
            st.one_of(st.none(), st.text(max_size=30)),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_attachments_are_refused_with_a_compose_error_or_read_back_intact(
    files: list[tuple[str, bytes, str, str | None]],
) -> None:
    draft = Draft(
        from_=SENDER,
        to=[Address("ana@gmail.test")],
        text="See attached.",
        html="<p>See attached.</p>",
        attachments=[Attachment(name, content, kind, cid) for name, content, kind, cid in files],
    )
    try:
        composed = compose(draft, message_id="prop2", now=NOW)
    except ComposeError as exc:
        assert exc.field.startswith("attachments[")
        return
    check_message(composed.raw)
    assert all(len(line) <= MAX_LINE_OCTETS for line in composed.raw.split(b"\r\n"))
    parsed = message_from_bytes(composed.raw, policy=policy.default)
    attached = [part.get_payload(decode=True) for part in parsed.walk() if part.get_filename() is not None]
    assert sorted(attached) == sorted(content for _, content, _, _ in files)


def _mailboxes(count: Callable[[str, str], int], value: str) -> int | str:
    try:
        return count("To", value)
    except ComposeError as exc:
        return exc.reason


@pytest.mark.parametrize(
    "value",
    [
        "ana@gmail.test",
        "Ana Lima <ana@gmail.test>",
        "<ana.lima+tag@mail.gmail.test>",
        "  Ana\t<ana@gmail.test>  ",
        "J. Smith <j@gmail.test>",
        '"Lima, Ana" <ana@gmail.test>',
        "ana@gmail.test, bob@gmail.test",
        "ana.@gmail.test",
        "ana@",
        "<ana@gmail.test",
    ],
)
def test_plain_mailboxes_are_counted_as_the_stdlib_parser_counts_them(value: str) -> None:
    assert _mailboxes(_address_list, value) == _mailboxes(_parsed_address_list, value)


@given(st.text(alphabet='ab.@<> \t,"();:[]1é-', max_size=40))
def test_any_address_field_is_counted_as_the_stdlib_parser_counts_it(value: str) -> None:
    assert _mailboxes(_address_list, value) == _mailboxes(_parsed_address_list, value)


header_lines = st.one_of(
    st.from_regex(r"[!-9;-~]{1,12}:", fullmatch=True),
    st.sampled_from(["From:", "To:", "Subject:", "Content-Type:", "X:", " ", "\t", "From ", ":"]),
).flatmap(
    lambda start: st.text(st.sampled_from('ab <>@:;,\t"é\u2028\x85\x0c\x1c'), max_size=20).map(
        lambda rest: start + rest
    )
)


@settings(max_examples=500)
@given(st.lists(header_lines, min_size=1, max_size=8), st.booleans())
def test_a_header_section_is_read_as_the_stdlib_parser_reads_it(lines: list[str], crlf_at_end: bool) -> None:
    text = "\r\n".join(lines) + ("\r\n" if crlf_at_end else "")
    try:
        _check_line_structure(text.encode() + b"\r\nbody\r\n")
    except ComposeError:
        assume(False)
    fast = header_message(text)
    whole = Parser(policy=policy.SMTPUTF8).parsestr(text, headersonly=True)
    assert type(fast) is type(whole)
    assert list(fast.raw_items()) == list(whole.raw_items())
    assert fast.get_payload() == whole.get_payload()
