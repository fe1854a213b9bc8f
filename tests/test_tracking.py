"""Tracking: signed tokens, the HTML rewrite, machine-open detection and the per-message decision."""

from __future__ import annotations

import email
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from itsdangerous import URLSafeSerializer

from estafeta.clock import ManualClock
from estafeta.compose.headers import check_message
from estafeta.compose.relayed import rewrite_relayed_html
from estafeta.compose.tracking import add_pixel, rewrite_links
from estafeta.config import TrackingSettings
from estafeta.store import accounts
from estafeta.store.db import Database
from estafeta.tracking import (
    Hit,
    TokenSigner,
    Tracker,
    TrackingChoice,
    TrackingOverride,
    agent_reason,
    machine_click_reason,
    machine_open_reason,
)
from tests.tampering import tampered

SECRET = b"k" * 32


def test_tokens_round_trip_and_carry_what_they_name() -> None:
    signer = TokenSigner(SECRET)
    assert signer.read(signer.open_token("msg_1", "ana@example.com"), "open") == Hit(
        "open", "msg_1", "ana@example.com"
    )
    click = signer.click_token("msg_1", None, "https://shop.example/a?b=1&c=2", 3)
    assert signer.read(click, "click") == Hit("click", "msg_1", None, "https://shop.example/a?b=1&c=2", 3)
    assert "/" not in click and "?" not in click  # safe as one path segment


def test_tampered_foreign_and_misused_tokens_are_refused() -> None:
    signer = TokenSigner(SECRET)
    click = signer.click_token("msg_1", None, "https://shop.example/", 0)
    assert signer.read(tampered(click), "click") is None
    assert (
        signer.read(TokenSigner(b"x" * 32).click_token("msg_1", None, "https://evil.example/", 0), "click")
        is None
    )
    assert signer.read(click, "open") is None  # a click token is not an open token, nor the reverse
    assert signer.read(signer.open_token("msg_1", None), "click") is None
    assert signer.read("garbage", "open") is None
    # Even a token signed with our secret never redirects to anything but an http(s) URL.
    forged = URLSafeSerializer(SECRET, salt="estafeta.tracking").dumps(
        ["c", "m", None, "javascript:alert(1)", 0]
    )
    assert signer.read(str(forged), "click") is None


def test_links_are_rewritten_except_untrackable_and_opted_out_ones() -> None:
    html = (
        '<p><a href="https://a.example/x?y=1&amp;z=2">one</a> '
        "<a class='b' href='http://b.example/'>two</a> "
        "<a href=https://c.example/c>three</a> "
        '<a href="mailto:hi@example.com">mail</a> <a href="#top">top</a> '
        '<a data-notrack href="https://private.example/reset">reset</a> <a name="anchor">x</a></p>'
    )
    seen: list[tuple[str, int]] = []

    def click_url(url: str, index: int) -> str:
        seen.append((url, index))
        return f"https://t.example/c/{index}?q=1&r=2"

    out = rewrite_links(html, click_url)
    assert seen == [("https://a.example/x?y=1&z=2", 0), ("http://b.example/", 1), ("https://c.example/c", 2)]
    assert out.count('href="https://t.example/c/') == 3 and "&amp;r=2" in out
    assert "<a class='b' href=\"https://t.example/c/1?q=1&amp;r=2\">two</a>" in out
    for untouched in ('href="mailto:hi@example.com"', 'href="#top"', 'href="https://private.example/reset"'):
        assert untouched in out


def test_pixel_goes_before_the_body_end_or_at_the_end() -> None:
    assert add_pixel("<html><body><p>x</p></BODY></html>", "https://t.example/o/1").endswith(
        '<img src="https://t.example/o/1" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0" /></BODY></html>'
    )
    assert add_pixel("<p>x</p>", "https://t.example/o/1?a=1&b=2").startswith(
        '<p>x</p><img src="https://t.example/o/1?a=1&amp;b=2"'
    )


@pytest.mark.parametrize(
    ("agent", "method", "reason"),
    [
        (
            "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
            "GET",
            "image-proxy:google",
        ),
        (
            "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
            "GET",
            "image-proxy:yahoo",
        ),
        ("Mozilla/5.0", "GET", "apple-mail-privacy-protection"),
        ("Mozilla/5.0 (compatible; Barracuda Sentinel)", "GET", "scanner:barracuda"),
        ("python-requests/2.31", "GET", "http-library"),
        ("", "GET", "no-user-agent"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.15",
            "HEAD",
            "head-request",
        ),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.15", "GET", None),
    ],
)
def test_automated_requests_are_recognised_by_agent_and_method(
    agent: str, method: str, reason: str | None
) -> None:
    assert agent_reason(agent, method) == reason


def test_timing_rules_for_opens_and_clicks() -> None:
    person = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    assert machine_open_reason(person, "GET", 1.0, 5.0) == "opened-right-after-delivery"
    assert machine_open_reason(person, "GET", 60.0, 5.0) is None
    assert machine_open_reason(person, "GET", None, 5.0) is None  # not delivered yet (or no record of it)
    assert machine_click_reason(person, "GET", True) == "several-links-at-once"
    assert machine_click_reason(person, "GET", False) is None


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 't.db'}")
    db.migrate()
    yield db
    db.close()


async def test_message_override_beats_account_switch_beats_stream_default(sqlite_db: Database) -> None:
    clock = ManualClock()
    account = sqlite_db.call(accounts.create_account, "acme", clock.now()).id
    settings = TrackingSettings(base_url="https://track.example.net/")
    tracker = Tracker(sqlite_db, settings, clock, SECRET, lambda: None)
    assert tracker.base_url == "https://track.example.net"
    assert await tracker.choice(account, "transactional", None) == TrackingChoice(True, False)
    assert await tracker.choice(account, "broadcast", None) == TrackingChoice(True, True)
    await tracker.set_preference(account, "broadcast", TrackingChoice(False, True))
    assert await tracker.choice(account, "broadcast", None) == TrackingChoice(False, True)
    assert await tracker.choice(account, "broadcast", TrackingOverride(opens=True)) == TrackingChoice(
        True, True
    )
    assert await tracker.choice(account, "transactional", TrackingOverride(clicks=True, opens=False)) == (
        TrackingChoice(False, True)
    )
    assert (await tracker.preferences(account))["broadcast"] == TrackingChoice(False, True)


async def test_no_tracking_domain_means_no_tracking(sqlite_db: Database) -> None:
    clock = ManualClock()
    tracker = Tracker(sqlite_db, TrackingSettings(), clock, SECRET, lambda: "http://127.0.0.1:8025")
    assert tracker.base_url is None
    assert await tracker.choice(1, "broadcast", TrackingOverride(True, True)) == TrackingChoice(False, False)
    assert tracker.rewriter("msg_1", TrackingChoice(True, True)) is None
    sandbox = Tracker(
        sqlite_db, TrackingSettings(use_api_url=True), clock, SECRET, lambda: "http://127.0.0.1:8025"
    )
    rewrite = sandbox.rewriter("msg_1", TrackingChoice(True, False))
    assert rewrite is not None
    out = rewrite('<a href="https://a.example/">a</a>', "ana@example.com")
    assert 'href="https://a.example/"' in out and 'src="http://127.0.0.1:8025/t/o/' in out
    token = out.split("/t/o/", 1)[1].split('"', 1)[0]
    assert sandbox.tokens.read(token, "open") == Hit("open", "msg_1", "ana@example.com")


def _pixel(markup: str) -> str:
    return add_pixel(markup, "https://t.example/t/o/x")


def test_a_relayed_html_message_changes_only_its_html() -> None:
    long_from = 'From: "Jöhn Smïth of the Longname Company" <jöhn.smith.longname@exämple.com>\r\n'
    headers = (
        long_from + "To: b@x.test\r\nSubject: Grüße aus Köln, mit einem recht langen Betreff, der nicht "
        "umbrochen werden darf\r\nMIME-Version: 1.0\r\nContent-Type: text/html;\r\n charset=iso-8859-1\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode()
    raw = headers + "<p>Café</p>\r\n".encode("iso-8859-1")
    out = rewrite_relayed_html(raw, _pixel)
    head, body = out.split(b"\r\n\r\n", 1)
    kept = [line for line in headers.split(b"\r\n")[:3]]
    assert head.split(b"\r\n")[:3] == kept  # every other field keeps its bytes, unfolded
    assert b"Content-Transfer-Encoding: quoted-printable" in head and b'charset="iso-8859-1"' in head
    assert body.isascii() and all(len(line) <= 78 for line in body.split(b"\r\n"))  # 7-bit, short lines
    check_message(out)
    part = email.message_from_bytes(out, policy=policy.default)
    assert "<p>Café</p>" in part.get_content() and "t.example/t/o/x" in part.get_content()


def test_relayed_multiparts_keep_their_structure_and_forwarded_mail_stays_as_it_was() -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@acme.test", "b@x.test", "Newsletter"
    message.set_content("text version\n")
    message.add_alternative("<p>html version <img src='cid:logo'></p>", subtype="html")
    html = message.get_payload()[1]
    html.add_related(b"\x89PNG....", maintype="image", subtype="png", cid="<logo>")
    html.get_payload()[0]["Content-ID"] = "<root@acme.test>"
    forwarded = EmailMessage()
    forwarded["From"], forwarded["Subject"] = "c@y.test", "Forwarded"
    forwarded.set_content("<p>keep me</p>", subtype="html")
    message.add_attachment(forwarded)
    raw = message.as_bytes(policy=policy.SMTP)
    out = rewrite_relayed_html(raw, _pixel)
    assert out.split(b"\r\n\r\n", 1)[0] == raw.split(b"\r\n\r\n", 1)[0]  # the header section
    check_message(out)
    parsed = email.message_from_bytes(out, policy=policy.default)
    root = parsed.get_body(("html",))
    assert root is not None and root["Content-ID"] == "<root@acme.test>"
    assert "t.example/t/o/x" in root.get_content()
    plain = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert plain.replace("\r\n", "\n") == "text version\n"
    (attached,) = [p for p in parsed.iter_attachments() if p.get_content_type() == "message/rfc822"]
    assert "t.example" not in attached.as_string()


def test_relayed_mail_that_cannot_be_read_exactly_is_left_alone() -> None:
    html_8bit = (
        b"From: a@acme.test\r\nTo: b@x.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html\r\nContent-Transfer-Encoding: 8bit\r\n\r\n<p>Gr\xc3\xbc\xc3\x9fe</p>\r\n"
    )
    assert rewrite_relayed_html(html_8bit, _pixel) is html_8bit  # no charset declared, and not ASCII
    unknown = html_8bit.replace(b"text/html", b"text/html; charset=x-no-such-charset")
    assert rewrite_relayed_html(unknown, _pixel) is unknown
    plain = b"From: a@acme.test\r\nTo: b@x.test\r\nSubject: s\r\n\r\nno markup here\r\n"
    assert rewrite_relayed_html(plain, _pixel) is plain
    signed = b"DKIM-Signature: v=1; d=acme.test\r\n" + html_8bit.replace(
        b"text/html", b"text/html; charset=utf-8"
    )
    assert rewrite_relayed_html(signed, _pixel) is signed
