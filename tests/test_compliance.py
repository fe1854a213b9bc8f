"""The compliance linter, rule by rule, the IDN restriction profile (UTS #39), and `estafeta lint`."""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from estafeta.cli import app
from estafeta.compliance import linter
from estafeta.compliance.html_check import html_problems
from estafeta.compliance.idn import RestrictionLevel, ascii_lookalike, check_domain, restriction_level
from estafeta.compliance.linter import (
    RULES,
    LintContext,
    _parsed_bodies,
    _single_text_bodies,
    lint_files,
    lint_raw,
)
from estafeta.smtp import server as smtp_server
from estafeta.smtp.server import author_domains

UNSUBSCRIBE = "https://news.acme.test/u/abc"


def eml(
    *,
    sender: str = "News <news@acme.test>",
    html: str | None = f'<p>Spring news.</p><p><a href="{UNSUBSCRIBE}">Unsubscribe</a></p>',
    text: str | None = None,
    headers: dict[str, str] | None = None,
    broadcast: bool = True,
    message_id: bool = True,
) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = "reader@yahoo.test"
    msg["Subject"] = "Spring"
    msg["Date"] = "Thu, 01 Jan 2026 10:00:00 +0000"
    if message_id:
        msg["Message-ID"] = "<m1@acme.test>"
    if broadcast:
        msg["Precedence"] = "bulk"
        msg["List-Unsubscribe"] = f"<{UNSUBSCRIBE}>, <mailto:unsub+abc@bounces.acme.test>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in (headers or {}).items():
        del msg[name]
        if value:
            msg[name] = value
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    else:
        msg.set_content(html or "", subtype="html")
    return msg.as_bytes()


def rules(raw: bytes, **context: object) -> dict[str, str]:
    return {f.rule: f.message for f in lint_raw(raw, LintContext(**context))}  # type: ignore[arg-type]


def test_a_compliant_broadcast_message_has_no_findings() -> None:
    assert lint_raw(eml(), LintContext(authenticated_domain="acme.test")) == []


def test_rfc5322_problems_are_reported_with_the_field() -> None:
    raw = eml().replace(b"Subject: Spring\r\n", b"Subject: Spring\r\nSubject: Again\r\n")
    (finding,) = [f for f in lint_raw(raw) if f.rule == "rfc5322"]
    assert finding.field == "headers.Subject" and "appears 2 times" in finding.message
    bare_lf = eml().replace(b"\r\n", b"\n")
    assert "bare LF" in rules(bare_lf)["rfc5322"]


def test_message_id_is_required() -> None:
    assert "no Message-ID" in rules(eml(message_id=False))["message-id"]


def test_broken_html_is_a_warning_naming_the_tags() -> None:
    found = lint_raw(eml(html=f'<div><p>Hi <a href="{UNSUBSCRIBE}">unsubscribe</a></p><table></div>'))
    (finding,) = [f for f in found if f.rule == "html"]
    assert finding.severity == "warning"
    assert "<table> opened on line 1 is not closed before </div>" in finding.message
    assert html_problems('<p>a<p>b<br><img src="x.png"></p>') == []
    assert html_problems("</span>") == ["</span> on line 1 closes no open <span>"]
    assert html_problems('<a href="1" href="2">x</a>') == [
        "<a> on line 1 has the attribute 'href' more than once"
    ]


def test_one_body_linted_again_is_judged_by_each_messages_own_headers_and_stream() -> None:
    """Bodies are read once and remembered; the findings still follow each message's headers."""
    html = f'<div><p><a href="{UNSUBSCRIBE}">unsubscribe</a></p><table></div>'
    broadcast = rules(eml(html=html))
    assert set(broadcast) == {"html"}
    assert rules(eml(html=html)) == broadcast
    bare = rules(eml(html=html, headers={"Precedence": "", "List-Unsubscribe-Post": ""}), stream="broadcast")
    assert set(bare) == {"html", "precedence-bulk", "one-click"}
    assert set(rules(eml(html=html, broadcast=False))) == {"html"}


def test_broadcast_needs_precedence_bulk() -> None:
    found = rules(eml(headers={"Precedence": "list"}), stream="broadcast")
    assert "`Precedence: bulk`" in found["precedence-bulk"] and "list" in found["precedence-bulk"]


def test_broadcast_needs_list_unsubscribe_with_https_and_the_one_click_post() -> None:
    missing = rules(eml(headers={"List-Unsubscribe": "", "List-Unsubscribe-Post": ""}), stream="broadcast")
    assert "needs a List-Unsubscribe header" in missing["list-unsubscribe"]
    mailto_only = rules(eml(headers={"List-Unsubscribe": "<mailto:u@acme.test>"}))
    assert "no https URI" in mailto_only["list-unsubscribe"]
    no_post = rules(eml(headers={"List-Unsubscribe-Post": ""}))
    assert "List-Unsubscribe=One-Click" in no_post["one-click"] and "missing" in no_post["one-click"]


def test_broadcast_needs_a_visible_unsubscribe_link() -> None:
    found = rules(eml(html='<p>News</p><a href="https://acme.test/shop">Shop</a>'))
    assert "no unsubscribe link" in found["unsubscribe-link"]
    worded = eml(html='<p>News</p><a href="https://acme.test/leave">Unsubscribe here</a>')
    assert "unsubscribe-link" not in rules(worded)
    in_text = eml(html=None, text=f"News.\nUnsubscribe: {UNSUBSCRIBE}\n")
    assert "unsubscribe-link" not in rules(in_text)


def test_same_from_per_category() -> None:
    found = rules(eml(), category_from_domain="news.acme.test")
    assert "sent From news.acme.test; this message uses acme.test" in found["from-per-category"]
    first = eml(sender="news@news.acme.test")
    second = eml(sender="news@acme.test")
    results = dict(lint_files([("a.eml", first), ("b.eml", second)]))
    assert [f.rule for f in results["a.eml"]] == []
    assert [f.rule for f in results["b.eml"]] == ["from-per-category"]


def test_truthful_from_must_align_with_the_authenticated_domain() -> None:
    found = rules(eml(sender="Bank <alerts@bank.test>"), authenticated_domain="acme.test")
    assert "bank.test is not the authenticated domain acme.test" in found["truthful-from"]
    assert "truthful-from" not in rules(eml(sender="n@mail.acme.test"), authenticated_domain="acme.test")
    signed = b"DKIM-Signature: v=1; a=rsa-sha256; d=other.test; s=s1; b=x; bh=y; h=from\r\n" + eml()
    assert "authenticated domain other.test" in rules(signed)["truthful-from"]


@pytest.mark.parametrize(
    ("field", "raw", "needle"),
    [
        ("headers.From", eml(sender="news@xn--pypal-4ve.com"), "mixes the Cyrillic and Latin scripts"),
        (
            "headers.Reply-To",
            eml(headers={"Reply-To": "help@xn--80ak6aa92e.com"}),
            "confusable with the ASCII",
        ),
        (
            "links",
            eml(html=f'<a href="https://xn--80ak6aa92e.com/">x</a><a href="{UNSUBSCRIBE}">u</a>'),
            "confusable",
        ),
    ],
)
def test_idn_domains_are_held_to_highly_restrictive(field: str, raw: bytes, needle: str) -> None:
    findings = [f for f in lint_raw(raw) if f.rule == "idn"]
    assert findings and findings[0].field == field and needle in findings[0].message


def test_idn_in_the_envelope_is_checked() -> None:
    (finding,) = [
        f for f in lint_raw(eml(), LintContext(envelope_from="b@xn--pypal-4ve.com")) if f.rule == "idn"
    ]
    assert finding.field == "envelope.mail_from"


def test_promotional_content_in_transactional_mail_is_a_warning() -> None:
    raw = eml(broadcast=False, html="<p>Your receipt. Use promo code X for 20% off!</p>")
    (finding,) = [f for f in lint_raw(raw, LintContext(stream="transactional")) if f.rule != "idn"]
    assert finding.rule == "promotional-transactional" and finding.severity == "warning"
    receipt = eml(broadcast=False, html="<p>Your receipt for order 42. Thank you.</p>")
    assert lint_raw(receipt, LintContext(stream="transactional")) == []


def test_every_rule_is_documented() -> None:
    documented = Path(__file__).parents[1].joinpath("docs/compliance.md").read_text()
    assert all(f"`{rule}`" in documented for rule in RULES)


# --- IDN (UTS #39) ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "level"),
    [
        ("example", RestrictionLevel.ASCII_ONLY),
        ("münchen", RestrictionLevel.SINGLE_SCRIPT),
        ("пример", RestrictionLevel.SINGLE_SCRIPT),
        ("日本語ドメイン", RestrictionLevel.SINGLE_SCRIPT),  # Han + Katakana resolve to Japanese
        ("abc日本", RestrictionLevel.HIGHLY_RESTRICTIVE),
        ("abc한국", RestrictionLevel.HIGHLY_RESTRICTIVE),
        ("abcㄅ中", RestrictionLevel.HIGHLY_RESTRICTIVE),  # Latin + Bopomofo + Han
        ("abcअ", RestrictionLevel.MODERATELY_RESTRICTIVE),  # Latin + Devanagari
        ("p\u0430ypal", RestrictionLevel.MINIMALLY_RESTRICTIVE),  # Latin + Cyrillic
        ("ab\u03b1", RestrictionLevel.MINIMALLY_RESTRICTIVE),  # Latin + Greek
        ("한국ひらがな", RestrictionLevel.MINIMALLY_RESTRICTIVE),  # Hangul + Hiragana
    ],
)
def test_restriction_levels(label: str, level: RestrictionLevel) -> None:
    assert restriction_level(label) == level


def test_whole_script_and_latin_lookalikes_are_confusable() -> None:
    cyrillic_apple = "\u0430\u0440\u0440\u04cf\u0435"
    assert ascii_lookalike(cyrillic_apple) is not None
    assert ascii_lookalike("\u0131nstagram") == ("instagram", [ascii_lookalike("\u0131nstagram")[1][0]])  # type: ignore[index]
    assert ascii_lookalike("пример") is None  # и has no ASCII lookalike
    assert ascii_lookalike("münchen") is None


def test_check_domain_judges_each_label_and_explains() -> None:
    assert check_domain("пример.com") == [] and check_domain("bücher.example") == []
    (problem,) = check_domain("xn--pypal-4ve.com")
    assert problem.label == "p\u0430ypal" and "U+0430 Cyrillic Small Letter A" in problem.reason
    (invalid,) = check_domain("xn--a--.com")
    assert "not a valid internationalised domain name" in invalid.reason


def test_scripts_outside_the_identifier_profile_are_refused() -> None:
    (runic,) = check_domain("\u16a0\u16a2\u16a6.com")
    assert "Runic" in runic.reason and "identifier profile" in runic.reason
    (cherokee,) = check_domain("\u13e3\u13ef\u13cd.example")
    assert "Cherokee" in cherokee.reason
    assert check_domain("ไทย.th") == [] and check_domain("ελλάδα.gr") == []  # recommended scripts


def test_digits_from_two_number_systems_are_refused() -> None:
    (mixed,) = check_domain("\u0915\u0967" + "1.in")  # Devanagari letter, Devanagari one, ASCII one
    assert "number systems" in mixed.reason and "U+0967" in mixed.reason and "U+0031" in mixed.reason
    assert check_domain("\u0915\u0967\u0968.in") == [] and check_domain("shop24.com") == []


# --- the command line ------------------------------------------------------------------------------


def test_lint_command_prints_a_table_and_exits_1_on_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.eml"
    good.write_bytes(eml())
    bad = tmp_path / "bad.eml"
    bad.write_bytes(eml(headers={"List-Unsubscribe-Post": ""}, message_id=False))
    runner = CliRunner()
    ok = runner.invoke(app, ["lint", str(good)], env={"COLUMNS": "200"})
    assert ok.exit_code == 0 and "no findings" in ok.output
    failed = runner.invoke(app, ["lint", str(good), str(bad)], env={"COLUMNS": "200"})
    assert failed.exit_code == 1
    assert "one-click" in failed.output and "message-id" in failed.output and "error" in failed.output


def test_a_broken_encoded_word_is_linted_as_it_stands() -> None:
    """Found by fuzzing the bounce parser, which shares the decoding: a base64 word that is not base64."""
    raw = (
        b"From: a@acme.test\r\nTo: b@gmail.test\r\nSubject: =?utf-8?b?!!!x?=\r\n"
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <a@acme.test>\r\n\r\nhi\r\n"
    )
    assert isinstance(lint_raw(raw, LintContext()), list)


body_header_lines = st.sampled_from(
    [
        b"From: a@b.test",
        b"Subject: Hi",
        b"Content-Type: text/plain",
        b"Content-Type: text/html; charset=UTF-8",
        b'content-type:text/plain; charset="iso-8859-1" ',
        b"Content-Type: text/plain; charset=nosuch",
        b"Content-Type: text/plain; format=flowed",
        b"Content-Type: multipart/mixed; boundary=x",
        b"Content-Type: TEXT/HTML",
        b"Content-Transfer-Encoding: 8bit",
        b"Content-Transfer-Encoding: base64",
        b"Content-Disposition: attachment",
        b" folded",
        b"\tfolded",
        b"From nobody",
        b":empty name",
        b"bad line",
        b"X-Bare: a\nb",
        b"X-Cr: a\rb",
        b"X-Utf8: \xc3\xa9",
    ]
)
body_bytes = st.lists(
    st.sampled_from([b"Hello", b" ", b"\r\n", b"\n", b"\r", b"\xc3\xa9", b"\xe9", b"\x85", b"\x0c", b"."]),
    max_size=30,
).map(b"".join)


@settings(max_examples=500)
@given(st.lists(body_header_lines, max_size=6), body_bytes)
def test_a_single_text_part_is_read_as_the_stdlib_parser_reads_it(lines: list[bytes], body: bytes) -> None:
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
    fast = _single_text_bodies(raw)
    assert fast is None or fast == _parsed_bodies(raw)


def test_address_headers_are_remembered_only_at_usual_lengths() -> None:
    """The From domains of the linter and of the relay are cached per header value, but a header longer than
    a line is parsed each time: clients choose what they send, and the caches must stay small."""
    crowd = ", ".join(f"user{i}@crowd.test" for i in range(100))
    short = b"From: Shop <orders@shop.test>\r\nSubject: s\r\n\r\nhi\r\n"
    long = f"From: {crowd}\r\nSubject: s\r\n\r\nhi\r\n".encode()
    assert author_domains(short) == ["shop.test"]
    assert author_domains(long) == ["crowd.test"] * 100
    assert linter._address_domains(("Shop <orders@shop.test>",)) == ("shop.test",)
    caches = (linter._address_domains, smtp_server._domains_in)
    remembered = [cache.cache_info().currsize for cache in caches]
    context = LintContext(stream="transactional", authenticated_domain="other.test")
    assert [f.rule for f in lint_raw(long, context) if f.rule == "truthful-from"] == ["truthful-from"]
    author_domains(long)
    assert remembered == [cache.cache_info().currsize for cache in caches]
