"""The bounce (RFC 3464) and complaint (RFC 5965) parsers never fail on what arrives at the return path:
arbitrary bytes and generated reports alike give a report (or None: not a complaint), never an exception.

These tests only look at what the parsers read (recipients, ids, fields), not at how a bounce is judged.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from estafeta.bounces.arf import Complaint, parse_complaint
from estafeta.bounces.dsn import BounceReport, parse_bounce

header_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=60)
ascii_text = st.text(st.characters(codec="ascii", exclude_characters="\r\n"), max_size=60)
addresses = st.from_regex(r"[a-z0-9.+-]{1,12}@[a-z0-9-]{1,10}\.(?:test|com)", fullmatch=True)
charsets = st.sampled_from(["utf-8", "iso-8859-1", "us-ascii", "x-unknown", "utf-7", "", "utf-8\x00"])
encodings = st.sampled_from(["7bit", "8bit", "base64", "quoted-printable", "x-uuencode", "binary", "bogus"])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_break_either_parser(raw: bytes) -> None:
    assert isinstance(parse_bounce(raw), BounceReport)
    assert parse_complaint(raw) is None or isinstance(parse_complaint(raw), Complaint)


@st.composite
def reports(draw: st.DrawFn) -> bytes:
    """A multipart/report (delivery-status or feedback-report) with drawn fields, charsets, encodings and
    boundaries, some of them broken."""
    boundary = draw(st.sampled_from(["b1", "=_x", "", "b1 b2", '"q"']))
    kind = draw(st.sampled_from(["delivery-status", "feedback-report", "DELIVERY-STATUS", "rfc822"]))
    recipient = draw(addresses)
    fields = draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        "Final-Recipient",
                        "Original-Recipient",
                        "Action",
                        "Status",
                        "Diagnostic-Code",
                        "Remote-MTA",
                        "Feedback-Type",
                        "Original-Rcpt-To",
                        "Original-Mail-From",
                        "Arrival-Date",
                        "Source-IP",
                        "Reported-Domain",
                        "Original-Envelope-Id",
                    ]
                ),
                st.one_of(header_text, st.just(f"rfc822; {recipient}"), st.just("5.1.1"), st.just("failed")),
            ),
            max_size=10,
        )
    )
    report_block = "".join(f"{name}: {value}\r\n" for name, value in fields)
    text = draw(header_text)
    charset = draw(charsets)
    cte = draw(encodings)
    original = draw(
        st.sampled_from(
            [
                "message/rfc822",
                "text/rfc822-headers",
                "message/rfc822-headers",
                "text/plain",
                "message/global",
            ]
        )
    )
    head = draw(st.binary(max_size=40))
    parts = [
        f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n{text}\r\n",
        f"Content-Type: message/{kind}\r\n\r\nReporting-MTA: dns; mx.test\r\n\r\n{report_block}",
        f"Content-Type: {original}\r\n\r\nMessage-ID: <{draw(ascii_text)}>\r\nFrom: {draw(header_text)}\r\n"
        f"To: {recipient}\r\nReturn-Path: <bounces+{draw(ascii_text)}@b.test>\r\n\r\nhi\r\n",
    ]
    body = "".join(f"--{boundary}\r\n{part}" for part in parts[: draw(st.integers(0, 3))])
    if draw(st.booleans()):
        body += f"--{boundary}--\r\n"
    message = (
        f"From: {draw(header_text)}\r\nTo: bounces+{draw(ascii_text)}@bounces.test\r\n"
        f"Subject: {draw(header_text)}\r\nAuto-Submitted: {draw(header_text)}\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type={kind}; boundary="{boundary}"\r\n\r\n{body}'
    )
    return message.encode("utf-8", "surrogateescape") + head


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(reports())
def test_generated_reports_never_break_either_parser(raw: bytes) -> None:
    report = parse_bounce(raw)
    assert all(isinstance(r.address, str) and r.address for r in report.recipients)
    complaint = parse_complaint(raw)
    if complaint is not None:
        assert complaint.feedback_type == complaint.feedback_type.lower()


@given(addresses, st.sampled_from(["5.1.1", "4.2.2", "5.7.1"]), header_text)
def test_a_standard_dsn_names_its_failed_recipient(recipient: str, status: str, diagnostic: str) -> None:
    raw = (
        "From: MAILER-DAEMON@mx.test\r\nTo: bounces+t1@bounces.test\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.test\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n--b--\r\n"
    ).encode()
    report = parse_bounce(raw)
    assert report.source == "dsn" and report.verp_token == "t1"
    assert [(r.address, r.status, r.action) for r in report.recipients] == [(recipient, status, "failed")]


def test_what_fuzzing_found_is_read_without_an_error() -> None:
    """Each of these raised from inside the parser before: a broken RFC 2047 word in the Subject and a
    non-ASCII charset name in another (fuzzing), a part's charset name with a NUL in it, and a header with
    undecodable bytes (hypothesis)."""
    raw = (
        b"From: MAILER-DAEMON@mx.test\r\nSubject: =?utf-8?b?!!!x?= undeliverable\r\n"
        b"Auto-Submitted: auto-\xff\xfereplied\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: text/plain; charset="utf-8\x00"\r\n\r\n'
        b"Delivery to the following recipients failed: ana@gmail.test\r\n"
    )
    report = parse_bounce(raw)
    assert [r.address for r in report.recipients] == ["ana@gmail.test"]
    assert parse_complaint(raw) is None
    charset = raw.replace(b"=?utf-8?b?!!!x?=", b"=?ut\xc3\xa9f-8?q?x?=")
    assert [r.address for r in parse_bounce(charset).recipients] == ["ana@gmail.test"]
