"""Composition: addresses, headers, MIME structure, and the checks on ready-made (relayed) messages."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser, Parser
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from estafeta.compose import (
    Address,
    AddressError,
    Attachment,
    ComposeError,
    Draft,
    compose,
    ensure_headers,
    parse_address,
)

NOW = datetime(2026, 11, 24, 21, 0, 5, tzinfo=UTC)
SENDER = Address("news@shop.test", "Shop")
ALICE = Address("alice@example.test", "Alice")


def parse(raw: bytes, *, utf8: bool = False) -> EmailMessage:
    # UTF-8 headers are parsed from text: BytesParser leaves them as undecoded bytes.
    if utf8:
        message = Parser(policy=policy.SMTPUTF8).parsestr(raw.decode("utf-8"))
    else:
        message = BytesParser(policy=policy.SMTP).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def content(part: EmailMessage) -> str:
    """The decoded text of a part, with the wire's CRLF turned back into LF."""
    return part.get_content().replace("\r\n", "\n")


def header_section(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def draft(**changes: object) -> Draft:
    fields: dict = {"from_": SENDER, "to": [ALICE], "subject": "Hello", "text": "Hi Alice\n"}
    fields.update(changes)
    return Draft(**fields)


def build(**changes: object) -> bytes:
    return compose(draft(**changes), message_id="msg_01", now=NOW).raw


def assert_crlf_only(raw: bytes) -> None:
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", raw) is None
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


# --- addresses ----------------------------------------------------------------------------------------------


def test_parse_plain_address() -> None:
    address = parse_address("  bob@Example.TEST ")
    assert address == Address("bob@example.test", "")
    assert address.domain == "example.test"
    assert not address.smtputf8


def test_parse_display_names() -> None:
    assert parse_address("Bob Smith <bob@example.test>") == Address("bob@example.test", "Bob Smith")
    assert parse_address('"Smith, Bob" <bob@example.test>').display_name == "Smith, Bob"
    assert parse_address('"Bob \\"B\\" Smith" <bob@example.test>').display_name == 'Bob "B" Smith'
    assert parse_address("Jöhn Dœ <john@example.test>").display_name == "Jöhn Dœ"
    assert parse_address("<bob@example.test>") == Address("bob@example.test", "")


def test_local_part_case_is_kept_and_domain_lowered() -> None:
    assert parse_address("Bob.Smith@EXAMPLE.Test").email == "Bob.Smith@example.test"


def test_idn_domain_becomes_a_label() -> None:
    address = parse_address("user@Bücher.test")
    assert address.email == "user@xn--bcher-kva.test"
    assert address.domain == "xn--bcher-kva.test"
    assert not address.smtputf8


def test_utf8_local_part_needs_smtputf8_and_is_nfc() -> None:
    address = parse_address("jose\u0301@example.test")
    assert address.email == "jos\u00e9@example.test"
    assert address.smtputf8


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [
        ("", "empty"),
        ("bob", "@-sign"),
        ("bob@example", "period"),
        ("bob@@example.test", "invalid characters"),
        ("a@example.test, b@example.test", "invalid characters"),
        ("Bob <bob@example.test", "angle bracket"),
        ("Bob bob@example.test>", "no opening '<'"),
        ("Bob\r\nBcc: x@example.test <bob@example.test>", "U+000A, U+000D"),
        ('"quoted local"@example.test', "Quoting"),
    ],
)
def test_parse_rejects_with_reason(value: str, reason_part: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(value)
    assert reason_part in caught.value.reason


def test_address_rejects_control_characters_however_built() -> None:
    with pytest.raises(AddressError, match="control characters"):
        Address("bob@example.test", "Bob\nBcc: eve@example.test")


def test_header_value() -> None:
    assert Address("bob@example.test").header_value() == "bob@example.test"
    assert Address("bob@example.test", "Smith, Bob").header_value() == '"Smith, Bob" <bob@example.test>'
    encoded = Address("bob@example.test", "Bøb").header_value()
    assert encoded.isascii() and encoded.startswith("=?utf-8?")
    parsed = parse(f"To: {encoded}\r\n\r\n".encode())
    assert parsed["To"].addresses[0].display_name == "Bøb"
    assert Address("bøb@example.test", "Bøb").header_value() == "Bøb <bøb@example.test>"


# --- compose: headers ---------------------------------------------------------------------------------------


def test_text_only_message_headers() -> None:
    composed = compose(draft(), message_id="msg_01", now=NOW)
    assert_crlf_only(composed.raw)
    assert composed.raw.isascii()
    message = parse(composed.raw)
    assert message["From"].addresses[0].addr_spec == "news@shop.test"
    assert message["From"].addresses[0].display_name == "Shop"
    assert str(message["To"]) == "Alice <alice@example.test>"
    assert message["Subject"] == "Hello"
    assert parsedate_to_datetime(message["Date"]) == NOW
    assert message["Date"].endswith("+0000")
    assert message["Message-ID"] == "<msg_01@shop.test>" == composed.message_id_header
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert content(message) == "Hi Alice\n"
    for absent in ("Cc", "Bcc", "Reply-To", "Precedence", "Feedback-ID"):
        assert absent not in message
    assert composed.recipients == [ALICE]
    assert not composed.smtputf8


def test_message_id_uses_the_from_domain_as_a_label() -> None:
    composed = compose(draft(from_=parse_address("a@bücher.test")), message_id="m.1", now=NOW)
    assert composed.message_id_header == "<m.1@xn--bcher-kva.test>"


def test_cc_reply_to_and_bcc_never_in_headers() -> None:
    cc = Address("carol@example.test", "Carol")
    bcc = Address("dave@example.test", "Dave")
    composed = compose(
        draft(cc=[cc], bcc=[bcc], reply_to=[Address("help@shop.test")]), message_id="m", now=NOW
    )
    message = parse(composed.raw)
    assert str(message["Cc"]) == "Carol <carol@example.test>"
    assert str(message["Reply-To"]) == "help@shop.test"
    assert b"dave@example.test" not in composed.raw
    assert b"bcc" not in composed.raw.lower()
    assert composed.recipients == [ALICE, cc, bcc]


def test_bcc_only_uses_undisclosed_recipients() -> None:
    composed = compose(draft(to=[], bcc=[ALICE]), message_id="m", now=NOW)
    assert b"\r\nTo: undisclosed-recipients:;\r\n" in composed.raw
    assert b"alice" not in composed.raw
    assert composed.recipients == [ALICE]


def test_cc_without_to_has_no_to_header() -> None:
    message = parse(build(to=[], cc=[ALICE]))
    assert "To" not in message
    assert str(message["Cc"]) == "Alice <alice@example.test>"


def test_recipients_deduplicated_with_case_insensitive_domain() -> None:
    composed = compose(
        draft(
            to=[ALICE, Address("Bob@example.test")],
            cc=[Address("alice@EXAMPLE.test", "Again")],
            bcc=[Address("bob@example.test"), ALICE],
        ),
        message_id="m",
        now=NOW,
    )
    assert [r.email for r in composed.recipients] == [
        "alice@example.test",
        "Bob@example.test",
        "bob@example.test",
    ]


def test_broadcast_adds_precedence_and_feedback_id() -> None:
    broadcast = compose(draft(stream="broadcast"), message_id="m", now=NOW, feedback_id="c42:acct7:news:est")
    message = parse(broadcast.raw)
    assert message["Precedence"] == "bulk"
    assert message["Feedback-ID"] == "c42:acct7:news:est"
    assert "Feedback-ID" not in parse(compose(draft(stream="broadcast"), message_id="m", now=NOW).raw)


def test_transactional_has_neither_precedence_nor_feedback_id() -> None:
    message = parse(compose(draft(), message_id="m", now=NOW, feedback_id="a:b:c:est").raw)
    assert "Precedence" not in message
    assert "Feedback-ID" not in message


@pytest.mark.parametrize("feedback_id", ["", "a:b:c:d:e", "a b:est", "a:b:", "é:est"])
def test_feedback_id_format_is_checked(feedback_id: str) -> None:
    with pytest.raises(ComposeError) as caught:
        compose(draft(stream="broadcast"), message_id="m", now=NOW, feedback_id=feedback_id)
    assert caught.value.field == "feedback_id"


def test_non_ascii_subject_is_encoded_and_folded() -> None:
    subject = "Ünïcödé sübjéct with quite a few words so that it must be folded " * 3
    raw = build(subject=subject)
    assert raw.isascii()
    subject_lines = re.search(rb"\r\nSubject:.*?\r\n(?=[^ \t])", raw, re.S)
    assert subject_lines is not None
    lines = subject_lines.group().strip(b"\r\n").split(b"\r\n")
    assert len(lines) > 1
    assert all(len(line) <= 78 for line in lines)
    assert b"=?utf-8?" in lines[0]
    assert parse(raw)["Subject"] == subject


def test_tags_are_not_headers() -> None:
    raw = build(tags=["welcome-series", "promo"])
    assert b"welcome-series" not in raw


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        compose(draft(), message_id="m", now=datetime(2026, 1, 1))


def test_message_id_must_be_a_dot_atom() -> None:
    with pytest.raises(ComposeError) as caught:
        compose(draft(), message_id="a b", now=NOW)
    assert caught.value.field == "message_id"


# --- compose: custom headers --------------------------------------------------------------------------------


def test_list_unsubscribe_is_folded_at_spaces_and_never_encoded() -> None:
    url = "https://links.shop.test/unsubscribe/" + "a1b2c3d4" * 14
    value = f"<{url}>, <mailto:unsubscribe@shop.test?subject=unsubscribe-{'x' * 40}>"
    raw = build(
        headers={
            "List-Unsubscribe": value,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": "Shop news <news.shop.test>",
            "X-Campaign": "spring",
        }
    )
    headers = header_section(raw)
    assert b"=?" not in headers
    assert f"List-Unsubscribe: <{url}>,\r\n <mailto:".encode() in headers
    message = parse(raw)
    assert message["List-Unsubscribe"] == value
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == "Shop news <news.shop.test>"
    assert message["X-Campaign"] == "spring"


def test_long_custom_header_folds_within_78_columns() -> None:
    value = " ".join(f"<msg{i}@shop.test>" for i in range(20))
    raw = build(headers={"References": value})
    folded = re.search(rb"\r\nReferences:.*?\r\n(?=[^ \t])", raw, re.S)
    assert folded is not None
    lines = folded.group().strip(b"\r\n").split(b"\r\n")
    assert len(lines) > 3
    assert all(len(line) <= 78 for line in lines)
    assert parse(raw)["References"] == value


def test_non_ascii_custom_header_uses_encoded_words() -> None:
    raw = build(headers={"X-Greeting": "¡Hola, señor!"})
    assert raw.isascii()
    assert parse(raw)["X-Greeting"] == "¡Hola, señor!"


@pytest.mark.parametrize(
    "name",
    [
        "From",
        "to",
        "CC",
        "Bcc",
        "Sender",
        "Date",
        "Message-ID",
        "Subject",
        "Reply-To",
        "MIME-Version",
        "Content-Type",
        "content-transfer-encoding",
        "Content-Disposition",
        "DKIM-Signature",
        "Return-Path",
        "Received",
        "Precedence",
        "Feedback-ID",
    ],
)
def test_reserved_headers_are_rejected(name: str) -> None:
    with pytest.raises(ComposeError) as caught:
        build(headers={name: "x"})
    assert caught.value.field == f"headers.{name}"
    assert "set by the platform" in caught.value.reason


@pytest.mark.parametrize("name", ["X Foo", "X:Foo", "X-Föö", "", "X-Tab\t"])
def test_invalid_header_names_are_rejected(name: str) -> None:
    with pytest.raises(ComposeError) as caught:
        build(headers={name: "x"})
    assert caught.value.field == f"headers.{name}"
    assert "printable ASCII" in caught.value.reason


@pytest.mark.parametrize("value", ["a\r\nBcc: eve@example.test", "a\nX-Evil: 1", "a\rb"])
def test_header_injection_is_rejected(value: str) -> None:
    with pytest.raises(ComposeError) as caught:
        build(headers={"X-Note": value})
    assert caught.value.field == "headers.X-Note"
    assert "CR or LF" in caught.value.reason


def test_other_control_characters_in_header_values_are_rejected() -> None:
    with pytest.raises(ComposeError, match=r"U\+0000"):
        build(headers={"X-Note": "a\0b"})


def test_duplicate_header_names_are_rejected() -> None:
    with pytest.raises(ComposeError, match="more than once"):
        build(headers={"X-Tag": "a", "x-tag": "b"})


def test_word_longer_than_998_octets_is_rejected() -> None:
    with pytest.raises(ComposeError, match="998"):
        build(headers={"X-Blob": "x" * 1000})


@pytest.mark.parametrize("subject", ["Hi\r\nBcc: eve@example.test", "Hi\nthere", "line\u2028separator"])
def test_subject_line_breaks_are_rejected(subject: str) -> None:
    with pytest.raises(ComposeError) as caught:
        build(subject=subject)
    assert caught.value.field == "subject"


def test_recipient_and_body_are_required() -> None:
    with pytest.raises(ComposeError) as no_recipient:
        build(to=[])
    assert no_recipient.value.field == "to"
    with pytest.raises(ComposeError) as no_body:
        build(text=None, html=None)
    assert no_body.value.field == "text"


def test_nul_in_body_is_rejected() -> None:
    with pytest.raises(ComposeError) as caught:
        build(text=None, html="<p>\0</p>")
    assert caught.value.field == "html"


# --- compose: bodies and MIME structure ---------------------------------------------------------------------


def test_html_only() -> None:
    message = parse(build(text=None, html="<p>Hi</p>"))
    assert message.get_content_type() == "text/html"
    assert content(message) == "<p>Hi</p>\n"


def test_text_and_html_make_alternative() -> None:
    message = parse(build(text="Hi", html="<p>Hi</p>"))
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert content(parts[1]) == "<p>Hi</p>\n"


def test_utf8_body_is_transfer_encoded_and_long_lines_wrapped() -> None:
    text = "Grüße aus Köln 🌷\n" + "long " * 400 + "\n"
    raw = build(text=text)
    assert raw.isascii()
    assert_crlf_only(raw)
    message = parse(raw)
    assert message["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert content(message) == text


def test_attachments_round_trip_in_multipart_mixed() -> None:
    pdf = bytes(range(256)) * 40
    csv = "naïve,b\r\n1,2\r\n".encode()
    raw = build(
        text="See attached",
        html="<p>See attached</p>",
        attachments=[
            Attachment("Résumé — 2026.pdf", pdf, "application/pdf"),
            Attachment("data.csv", csv, "text/csv"),
        ],
    )
    assert raw.isascii()
    assert_crlf_only(raw)
    assert b"filename*=utf-8''R%C3%A9sum%C3%A9%20%E2%80%94%202026.pdf" in raw
    message = parse(raw)
    assert message.get_content_type() == "multipart/mixed"
    body, first, second = message.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert first.get_content_type() == "application/pdf"
    assert first.get_content_disposition() == "attachment"
    assert first.get_filename() == "Résumé — 2026.pdf"
    assert first.get_content() == pdf
    assert second.get_content_type() == "text/csv"
    assert second.get_payload(decode=True) == csv
    assert "MIME-Version" not in first


def test_inline_images_make_related_beside_the_text() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(100)
    raw = build(
        text="Logo",
        html='<img src="cid:logo@shop.test">',
        attachments=[
            Attachment("logo.png", png, "image/png", content_id="<logo@shop.test>"),
            Attachment("terms.txt", b"terms", "text/plain"),
        ],
    )
    message = parse(raw)
    assert message.get_content_type() == "multipart/mixed"
    alternative, terms = message.iter_parts()
    assert terms.get_filename() == "terms.txt"
    plain, related = alternative.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    assert related.get_param("type") == "text/html"
    html, image = related.iter_parts()
    assert html.get_content_type() == "text/html"
    assert image["Content-ID"] == "<logo@shop.test>"
    assert image.get_content_disposition() == "inline"
    assert image.get_content() == png


def test_inline_image_with_html_only() -> None:
    message = parse(
        build(
            text=None,
            html='<img src="cid:logo">',
            attachments=[Attachment("l.gif", b"GIF89a", "image/gif", "logo")],
        )
    )
    assert message.get_content_type() == "multipart/related"
    html, image = message.iter_parts()
    assert html.get_content_type() == "text/html"
    assert image["Content-ID"] == "<logo>"


def test_inline_image_with_text_only_and_html_with_files() -> None:
    related = parse(build(attachments=[Attachment("l.gif", b"GIF89a", "image/gif", "logo")]))
    assert related.get_content_type() == "multipart/related"
    assert related.get_param("type") == "text/plain"
    mixed = parse(build(text=None, html="<p>x</p>", attachments=[Attachment("a.txt", b"a", "text/plain")]))
    assert [p.get_content_type() for p in mixed.iter_parts()] == ["text/html", "text/plain"]


@pytest.mark.parametrize(
    ("attachment", "field"),
    [
        (Attachment("a.bin", b"x", "binary"), "attachments[0].content_type"),
        (Attachment("a.eml", b"x", "message/rfc822"), "attachments[0].content_type"),
        (Attachment("a", b"x", "multipart/mixed"), "attachments[0].content_type"),
        (Attachment(" ", b"x"), "attachments[0].filename"),
        (Attachment("a\r\n.txt", b"x"), "attachments[0].filename"),
        (Attachment("a.png", b"x", "image/png", "lo go"), "attachments[0].content_id"),
    ],
)
def test_attachment_checks(attachment: Attachment, field: str) -> None:
    with pytest.raises(ComposeError) as caught:
        build(attachments=[attachment])
    assert caught.value.field == field


# --- compose: internationalised addresses -------------------------------------------------------------------


def test_utf8_local_part_makes_an_smtputf8_message() -> None:
    recipient = parse_address("Zoë <zoë@bücher.test>")
    composed = compose(draft(to=[recipient], subject="Grüße"), message_id="m", now=NOW)
    assert composed.smtputf8
    assert "To: Zoë <zoë@xn--bcher-kva.test>".encode() in composed.raw
    assert_crlf_only(composed.raw)
    message = parse(composed.raw, utf8=True)
    assert message["To"].addresses[0].addr_spec == "zoë@xn--bcher-kva.test"
    assert message["Subject"] == "Grüße"
    assert content(message) == "Hi Alice\n"


def test_idn_domains_alone_do_not_need_smtputf8() -> None:
    composed = compose(draft(to=[parse_address("Zoë <zoe@bücher.test>")]), message_id="m", now=NOW)
    assert not composed.smtputf8
    assert composed.raw.isascii()
    assert parse(composed.raw)["To"].addresses[0].display_name == "Zoë"


def test_a_subject_word_too_long_for_a_line_is_encoded_even_in_an_smtputf8_message() -> None:
    subject = "漢" * 500  # 1500 octets without a space to fold at
    composed = compose(
        draft(to=[parse_address("zoë@example.test")], subject=subject), message_id="m", now=NOW
    )
    assert composed.smtputf8
    assert_crlf_only(composed.raw)
    assert all(len(line) <= 78 for line in header_section(composed.raw).split(b"\r\n"))
    assert parse(composed.raw, utf8=True)["Subject"] == subject


def test_each_message_gets_its_own_multipart_boundary() -> None:
    first, second = (parse(build(text="Hi", html="<p>Hi</p>")) for _ in range(2))
    assert first.get_boundary() and first.get_boundary() != second.get_boundary()


# --- properties ---------------------------------------------------------------------------------------------


HEADER_TEXT = st.text(
    st.characters(
        exclude_categories=("Cs", "Cc"), include_characters="\t", exclude_characters="\u2028\u2029"
    ),
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(
    subject=HEADER_TEXT,
    text=st.text(
        st.characters(exclude_characters="\0", exclude_categories=("Cs",)), min_size=1, max_size=2000
    ),
)
def test_any_unicode_subject_and_body_round_trip(subject: str, text: str) -> None:
    assume("=?" not in subject)  # text that looks like an encoded word is decoded by every reader
    raw = build(subject=subject, text=text)
    assert raw.isascii()
    assert_crlf_only(raw)
    message = parse(raw)
    assert " ".join(message["Subject"].split()) == " ".join(subject.split())
    lines = re.split(r"\r\n|\r|\n", text)
    if lines[-1] == "":
        lines.pop()  # a final line break ends the last line rather than starting a new one
    assert content(message) == "".join(line + "\n" for line in lines)


# --- ensure_headers (messages relayed already composed) -----------------------------------------------------

RELAYED = (
    b"From: App <app@shop.test>\r\n"
    b"To: alice@example.test, Bob <bob@example.test>\r\n"
    b"Subject: Order 42\r\n"
    b"X-Custom:   spaced   value  \r\n"
    b"\r\n"
    b"Thanks for your order.\r\n"
)


def test_ensure_headers_adds_date_and_message_id_keeping_the_rest() -> None:
    raw, message_id = ensure_headers(RELAYED, message_id="msg_9", sending_domain="shop.test", now=NOW)
    assert message_id == "<msg_9@shop.test>"
    head, body = RELAYED.split(b"\r\n\r\n", 1)
    assert (
        raw
        == head + b"\r\nDate: Tue, 24 Nov 2026 21:00:05 +0000\r\nMessage-ID: <msg_9@shop.test>\r\n\r\n" + body
    )
    message = parse(raw)
    assert message["Message-ID"] == message_id
    assert parsedate_to_datetime(message["Date"]) == NOW


def test_ensure_headers_keeps_existing_fields_untouched() -> None:
    original = b"Message-ID: <abc@app.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 -0500\r\n" + RELAYED
    raw, message_id = ensure_headers(original, message_id="msg_9", sending_domain="shop.test", now=NOW)
    assert raw == original
    assert message_id == "<abc@app.test>"


def test_ensure_headers_accepts_headers_without_body() -> None:
    raw, _ = ensure_headers(
        b"From: a@shop.test\r\nTo: b@example.test", message_id="m", sending_domain="shop.test", now=NOW
    )
    assert raw.startswith(b"From: a@shop.test\r\nTo: b@example.test\r\nDate: ")
    assert_crlf_only(raw)


def test_ensure_headers_accepts_utf8_headers() -> None:
    original = "From: Zoë <zoë@shop.test>\r\nTo: b@example.test\r\nSubject: Grüße\r\n\r\nHallo\r\n".encode()
    raw, _ = ensure_headers(original, message_id="m", sending_domain="shop.test", now=NOW)
    assert raw.startswith(original.split(b"\r\n\r\n")[0])


@pytest.mark.parametrize(
    ("raw", "field", "reason_part"),
    [
        (b"", "message", "empty"),
        (b"\r\nbody\r\n", "headers", "no header section"),
        (b"To: a@example.test\r\n\r\nx\r\n", "headers.From", "required"),
        (b"From: a@shop.test\r\nFrom: b@shop.test\r\n\r\nx\r\n", "headers.From", "2 times"),
        (b"From: a@shop.test\r\nSubject: a\r\nSubject: b\r\n\r\nx\r\n", "headers.Subject", "2 times"),
        (b"From: not an address\r\n\r\nx\r\n", "headers.From", "not a valid address"),
        (b"From: a@shop.test\r\nTo: x@\r\n\r\nx\r\n", "headers.To", "cannot be parsed"),
        (b"From: a@shop.test\r\nTo: <>\r\n\r\nx\r\n", "headers.To", "not a valid address"),
        (b"From: undisclosed:;\r\n\r\nx\r\n", "headers.From", "at least one mailbox"),
        (b"From: a@shop.test, b@shop.test\r\n\r\nx\r\n", "headers.Sender", "more than one mailbox"),
        (b"From: a@shop.test\nTo: b@example.test\r\n\r\nx\r\n", "message", "bare LF on line 1"),
        (b"From: a@shop.test\r\n\r\nline\rline\r\n", "message", "bare CR on line 3"),
        (b"From: a@shop.test\r\n\r\nbody\n", "message", "bare LF on line 3"),
        (b"From: a@shop.test\r\nX-Long: " + b"x" * 991 + b"\r\n\r\nx\r\n", "message", "line 2 is longer"),
        (b"From: a@shop.test\r\n\r\n" + b"x" * 999 + b"\r\n", "message", "line 3 is longer"),
        (b"From: a@shop.test\r\nBad Name: x\r\n\r\nx\r\n", "headers", "line 2 is not a header field"),
        (b"From: a@shop.test\r\nno colon here\r\n\r\nx\r\n", "headers", "line 2 is not a header field"),
        (b" folded: x\r\nFrom: a@shop.test\r\n\r\nx\r\n", "headers", "continuation line"),
        (b"From a@shop.test  Mon Nov 23 2026\r\nFrom: a@shop.test\r\n\r\nx\r\n", "headers", "line 1"),
        (b"From: a@shop.test\r\nSubject: \xff\xfe\r\n\r\nx\r\n", "headers", "not UTF-8 at offset 28"),
        (b"From: a@shop.test\r\nDate: yesterday\r\n\r\nx\r\n", "headers.Date", "not an RFC 5322 date"),
        (
            b"From: a@shop.test\r\nDate: Tue, 24 Nov 2026 21:00:05\r\n\r\nx\r\n",
            "headers.Date",
            "no time zone",
        ),
        (b"From: a@shop.test\r\nMessage-ID: garbage\r\n\r\nx\r\n", "headers.Message-ID", "msg-id"),
    ],
)
def test_ensure_headers_rejects_invalid_messages(raw: bytes, field: str, reason_part: str) -> None:
    with pytest.raises(ComposeError) as caught:
        ensure_headers(raw, message_id="m", sending_domain="shop.test", now=NOW)
    assert caught.value.field == field
    assert reason_part in caught.value.reason


def test_composed_messages_pass_ensure_headers_unchanged() -> None:
    composed = compose(
        draft(
            cc=[Address("c@example.test", "Çarol")],
            html="<p>x</p>",
            headers={"List-Unsubscribe": "<https://shop.test/u/1>"},
            attachments=[Attachment("ä.txt", b"data", "text/plain")],
        ),
        message_id="m",
        now=NOW,
    )
    raw, message_id = ensure_headers(composed.raw, message_id="other", sending_domain="shop.test", now=NOW)
    assert raw == composed.raw
    assert message_id == composed.message_id_header


@pytest.mark.parametrize("where", ["subject", "text", "html"])
def test_lone_surrogates_are_rejected_with_the_field(where: str) -> None:
    values = {"subject": "Hi", "text": "body", "html": None, where: "bad \ud800 text"}
    draft = Draft(from_=parse_address("a@example.test"), to=[parse_address("b@example.test")], **values)
    with pytest.raises(ComposeError) as caught:
        compose(draft, message_id="msg_1", now=NOW)
    assert caught.value.field == where
