"""parse_bounce: RFC 3464 reports, free-form bounces and automatic replies."""

from __future__ import annotations

import base64
import quopri
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from estafeta.bounces import Kind, Policy, Reason, parse_bounce, parse_complaint, retry_advised

CORPUS = Path(__file__).parent / "data" / "bounces"


def _dsn(
    recipient_blocks: str, *, enclosed: str | None = None, to: str = "bounces+t0k3n@mail.estafeta.test"
) -> bytes:
    """A multipart/report as Postfix writes it, with the per-recipient blocks given."""
    third = f"--BOUNDARY\nContent-Type: text/rfc822-headers\n\n{enclosed}\n" if enclosed is not None else ""
    return (
        "From: MAILER-DAEMON@mx.example.test (Mail Delivery System)\n"
        f"To: {to}\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "Auto-Submitted: auto-replied\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"\n'
        "\n"
        "--BOUNDARY\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
        "This is the mail system at host mx.example.test.\n"
        "\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients.\n"
        "\n"
        "--BOUNDARY\n"
        "Content-Type: message/delivery-status\n"
        "\n"
        "Reporting-MTA: dns; mx.example.test\n"
        "Original-Envelope-Id: env-42\n"
        "Arrival-Date: Mon, 5 Jan 2026 10:00:00 +0000 (UTC)\n"
        "\n"
        f"{recipient_blocks}\n"
        f"{third}"
        "--BOUNDARY--\n"
    ).encode()


MULTI = """\
Final-Recipient: rfc822; alice@example.test
Original-Recipient: rfc822;alice@example.test
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.test
Diagnostic-Code: smtp; 550 5.1.1 <alice@example.test>: Recipient address rejected:
    User unknown in local recipient table

Final-Recipient: rfc822; bob@example.test
Action: delayed
Status: 4.2.2
Diagnostic-Code: smtp; 452 4.2.2 Mailbox full
Will-Retry-Until: Tue, 6 Jan 2026 10:00:00 +0000 (UTC)

Final-Recipient: rfc822; carol@example.test
Action: relayed
Status: 2.0.0
"""

HEADERS = """\
Return-Path: <bounces+t0k3n@mail.estafeta.test>
From: News <news@shop.example.test>
To: alice@example.test
Subject: Our January offers
Message-ID: <20260105.abc@mail.estafeta.test>
"""


def test_multi_recipient_report() -> None:
    report = parse_bounce(_dsn(MULTI, enclosed=HEADERS))
    assert report.is_bounce and report.source == "dsn"
    by_address = {r.address: r for r in report.recipients}
    assert list(by_address) == ["alice@example.test", "bob@example.test", "carol@example.test"]
    alice, bob, carol = by_address.values()
    assert (alice.action, alice.status, alice.verdict.kind, alice.verdict.reason) == (
        "failed",
        "5.1.1",
        Kind.HARD,
        Reason.USER_UNKNOWN,
    )
    assert "User unknown in local recipient table" in (alice.diagnostic or "")
    assert (bob.action, bob.verdict.kind, bob.verdict.reason) == ("delayed", Kind.SOFT, Reason.MAILBOX_FULL)
    assert (carol.action, carol.verdict.kind) == ("relayed", Kind.NONE)
    assert (report.kind, report.reason) == (Kind.HARD, Reason.USER_UNKNOWN)  # the worst recipient decides
    assert report.original_message_id == "<20260105.abc@mail.estafeta.test>"
    assert report.original_envelope_id == "env-42"
    assert report.verp_token == "t0k3n"


def test_delayed_is_soft_and_not_final() -> None:
    block = "Final-Recipient: rfc822; dave@example.test\nAction: delayed\nStatus: 4.4.1\n"
    report = parse_bounce(_dsn(block))
    assert (report.is_bounce, report.kind, report.reason) == (True, Kind.SOFT, Reason.SERVER_DOWN)
    assert retry_advised(report.recipients[0].verdict)


def test_delayed_beats_a_permanent_looking_status() -> None:
    block = "Final-Recipient: rfc822; dave@example.test\nAction: delayed\nStatus: 5.1.1\n"
    assert parse_bounce(_dsn(block)).kind is Kind.SOFT


def test_failed_with_transient_status_is_soft() -> None:
    block = "Final-Recipient: rfc822; erin@example.test\nAction: failed\nStatus: 4.4.7\n"
    report = parse_bounce(_dsn(block))
    assert (report.kind, report.reason) == (Kind.SOFT, Reason.EXPIRED)


def test_delivered_and_relayed_are_not_bounces() -> None:
    blocks = (
        "Final-Recipient: rfc822; a@example.test\nAction: delivered\nStatus: 2.0.0\n\n"
        "Final-Recipient: rfc822; b@example.test\nAction: expanded\nStatus: 2.0.0\n"
    )
    report = parse_bounce(_dsn(blocks))
    assert (report.is_bounce, report.kind) == (False, Kind.NONE)
    assert [r.address for r in report.recipients] == ["a@example.test", "b@example.test"]


def test_missing_headers_part() -> None:
    block = "Final-Recipient: rfc822; frank@example.test\nAction: failed\nStatus: 5.2.1\n"
    report = parse_bounce(_dsn(block))
    assert (report.kind, report.reason) == (Kind.SOFT, Reason.MAILBOX_DISABLED)  # by default not suppressed
    strict = parse_bounce(_dsn(block), Policy(disabled_mailbox="account"))
    assert (strict.kind, strict.scope) == (Kind.HARD, "account")
    assert report.original_message_id is None
    assert report.original_envelope_id == "env-42"


def test_generic_status_is_refined_by_the_diagnostic() -> None:
    block = (
        "Final-Recipient: rfc822; gina@example.test\nAction: failed\nStatus: 5.0.0\n"
        "Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\n"
    )
    report = parse_bounce(_dsn(block))
    assert (report.kind, report.reason, report.recipients[0].status) == (
        Kind.SOFT,
        Reason.MAILBOX_FULL,
        "5.2.2",
    )


def test_generic_status_with_a_comment() -> None:
    block = (
        "Final-Recipient: rfc822; hal@example.test\nAction: failed\n"
        "Status: 5.0.0 (recipient reached disk quota)\n"
    )
    assert parse_bounce(_dsn(block)).reason is Reason.MAILBOX_FULL


def test_specific_status_wins_over_the_diagnostic_wording() -> None:
    block = (
        "Final-Recipient: rfc822; ivy@example.test\nAction: failed\nStatus: 5.2.2\n"
        "Diagnostic-Code: smtp; 550 user unknown\n"
    )
    report = parse_bounce(_dsn(block))
    assert (report.kind, report.reason) == (Kind.SOFT, Reason.MAILBOX_FULL)


def test_original_recipient_is_preferred_to_the_rewritten_final_one() -> None:
    block = (
        "Original-Recipient: rfc822;jo@example.test\n"
        "Final-Recipient: rfc822; jo.smith@internal.example.test\n"
        "Action: failed\nStatus: 5.1.1\n"
    )
    assert parse_bounce(_dsn(block)).recipients[0].address == "jo@example.test"


def test_verp_token_only_from_a_bounces_address() -> None:
    block = "Final-Recipient: rfc822; kim@example.test\nAction: failed\nStatus: 5.1.1\n"
    assert parse_bounce(_dsn(block, to="list-bounces+kim=example.test@lists.example.test")).verp_token is None
    assert parse_bounce(_dsn(block, to="<bounces+a1.b2@rp.example.test>")).verp_token == "a1.b2"


POSTFIX_PLAIN = b"""\
From: MAILER-DAEMON@mx.example.test (Mail Delivery System)
To: bounces+plain1@mail.estafeta.test
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: text/plain

This is the Postfix program at host mx.example.test.

I'm sorry to have to inform you that the message returned
below could not be delivered to one or more destinations.

<lee@example.test>: host mx.example.test[192.0.2.25] said: 550 5.1.1
    <lee@example.test>... User unknown (in reply to RCPT TO command)

<max@example.test>: host mx.example.test[192.0.2.25] said: 452 4.2.2
    Mailbox full (in reply to RCPT TO command)

--- Below this line is a copy of the message.

Message-ID: <plain-1@mail.estafeta.test>
To: lee@example.test, max@example.test, nobody-here@example.test
"""


def test_plain_text_bounce_with_two_recipients() -> None:
    report = parse_bounce(POSTFIX_PLAIN)
    assert report.is_bounce and report.source == "heuristic"
    verdicts = {r.address: (r.verdict.kind, r.verdict.reason, r.status) for r in report.recipients}
    assert verdicts == {
        "lee@example.test": (Kind.HARD, Reason.USER_UNKNOWN, "5.1.1"),
        "max@example.test": (Kind.SOFT, Reason.MAILBOX_FULL, "4.2.2"),
    }
    assert report.kind is Kind.HARD
    assert report.original_message_id == "<plain-1@mail.estafeta.test>"
    assert report.verp_token == "plain1"


def test_exim_failed_recipients_header() -> None:
    report = parse_bounce((CORPUS / "exim_01.txt").read_bytes())
    assert [r.address for r in report.recipients] == ["userx@its.example.nl"]
    assert (report.kind, report.reason) == (Kind.HARD, Reason.USER_UNKNOWN)


def test_flufl_decides_recipients_the_text_does_not_name() -> None:
    # AOL names only the screen name; the one address in the text is the sender's own list.
    report = parse_bounce((CORPUS / "aol_01.txt").read_bytes())
    assert [r.address for r in report.recipients] == ["screenname@aol.com"]
    assert report.source == "flufl"


def test_warning_of_a_delay_is_soft() -> None:
    report = parse_bounce((CORPUS / "simple_03.txt").read_bytes())
    assert (report.is_bounce, report.kind) == (True, Kind.SOFT)
    assert report.recipients[0].action == "delayed"


def test_auto_replied_header_does_not_hide_a_real_bounce() -> None:
    # mail.ru marks its bounces Auto-Submitted: auto-replied; its "user not found" comes from the scanner that
    # reads the message after DATA, so it is a filter's answer, not a dead address
    report = parse_bounce((CORPUS / "simple_39.txt").read_bytes())
    assert (report.is_bounce, report.kind, report.reason) == (True, Kind.SOFT, Reason.FILTERED)


def test_null_sender_report_with_auto_submitted_is_a_bounce_not_an_auto_reply() -> None:
    report = parse_bounce((CORPUS / "bounceparser" / "warning-5.msg").read_bytes())
    assert (report.is_bounce, report.kind, report.reason) == (True, Kind.HARD, Reason.USER_UNKNOWN)


@pytest.mark.parametrize("action", ["delivered", "relayed", "expanded", "relayed (to non-DSN-aware mailer)"])
def test_reports_of_success_are_not_bounces(action: str) -> None:
    block = f"Final-Recipient: rfc822; ok@example.test\nAction: {action}\nStatus: 2.1.5\n"
    report = parse_bounce(_dsn(block))
    assert (report.is_bounce, report.kind, report.reason) == (False, Kind.NONE, Reason.DELIVERED)


def test_sendmail_return_receipt_is_not_a_bounce() -> None:
    report = parse_bounce((CORPUS / "php_bounce_handler" / "sendmail-dsn-hdrs-delivered.eml").read_bytes())
    assert (report.is_bounce, report.reason) == (False, Reason.DELIVERED)


def test_free_text_report_of_delivery_is_not_a_bounce() -> None:
    raw = _reply(
        "Subject: Delivered: Our January offers\n",
        "Your message has been delivered to the following recipients:\n\nana@example.test\n",
    ).replace(b"From: Pat <pat@example.test>", b"From: postmaster@example.test")
    report = parse_bounce(raw)
    assert (report.is_bounce, report.reason) == (False, Reason.DELIVERED)


def test_read_receipt_is_not_a_bounce() -> None:
    report = parse_bounce((CORPUS / "flanker" / "disposition-notification.eml").read_bytes())
    assert (report.is_bounce, report.reason) == (False, Reason.DELIVERED)


def _mdn(disposition: str, text: str) -> bytes:
    return (
        "From: Mail Delivery Subsystem <admin@mx.example.test>\nTo: bounces+t0k3n@mail.estafeta.test\n"
        "Subject: Automatically rejected mail\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="B"\n\n'
        f"--B\nContent-Type: text/plain\n\n{text}\n"
        "--B\nContent-Type: message/disposition-notification\n\n"
        f"Reporting-UA: mail; Dovecot Mail Delivery Agent\nFinal-Recipient: rfc822; a@b.test\n"
        f"Disposition: {disposition}\n--B--\n"
    ).encode()


def test_an_automatic_deletion_notice_is_a_refusal_not_a_read_receipt() -> None:
    """Sieve 'reject' (RFC 5429) and Dovecot's over-quota refusal are reported as an MDN saying 'deleted'."""
    rejected = parse_bounce(
        _mdn(
            "automatic-action/MDN-sent-automatically; deleted",
            "Your message to <a@b.test> was automatically rejected:\nQuota exceeded",
        )
    )
    assert (rejected.is_bounce, rejected.kind, rejected.reason) == (True, Kind.SOFT, Reason.MAILBOX_FULL)
    deleted_by_reader = parse_bounce(
        _mdn("manual-action/MDN-sent-manually; deleted", "Your message was deleted.")
    )
    assert (deleted_by_reader.is_bounce, deleted_by_reader.reason) == (False, Reason.DELIVERED)


def test_user_unknown_after_end_of_data_is_filtered() -> None:
    block = (
        "Final-Recipient: rfc822; zed@example.test\nAction: failed\nStatus: 5.0.0\n"
        "Diagnostic-Code: smtp; 554 Rcpt <zed@example.test> does not exist\n"
    )
    raw = _dsn(block).replace(
        b"be delivered to one or more recipients.",
        b"be delivered to one or more recipients.\n\n<zed@example.test>: host mx said: 554 Rcpt does not"
        b" exist"
        b" (in reply to end of DATA command)",
    )
    report = parse_bounce(raw)
    assert (report.kind, report.reason) == (Kind.SOFT, Reason.FILTERED)
    assert any("after DATA" in str(e) for e in report.evidence)


def test_refusal_of_the_sender_in_a_dsn_never_suppresses() -> None:
    block = (
        "Final-Recipient: rfc822; ana@example.test\nAction: failed\nStatus: 5.0.0\n"
        "Diagnostic-Code: smtp; 554 Sending address not accepted due to spam filter\n"
    )
    report = parse_bounce(_dsn(block))
    assert (report.kind, report.scope) == (Kind.SOFT, "none")
    assert report.recipients[0].verdict.blame == "sender"


def _reply(headers: str, body: str = "Thank you for your message.\n") -> bytes:
    return (
        f"From: Pat <pat@example.test>\nTo: bounces+ooo1@mail.estafeta.test\n{headers}"
        f"MIME-Version: 1.0\nContent-Type: text/plain\n\n{body}"
    ).encode()


def test_out_of_office_by_rfc_3834_header() -> None:
    report = parse_bounce(_reply("Subject: Re: offers\nAuto-Submitted: auto-replied\n"))
    assert (report.is_bounce, report.kind, report.reason) == (False, Kind.NONE, Reason.OUT_OF_OFFICE)
    assert report.verp_token == "ooo1"


def test_out_of_office_by_subject() -> None:
    report = parse_bounce(_reply("Subject: Out of Office: Re: offers\n"))
    assert (report.is_bounce, report.reason) == (False, Reason.OUT_OF_OFFICE)


def test_out_of_office_by_x_autoreply_and_by_wording() -> None:
    assert parse_bounce(_reply("Subject: Re: offers\nX-Autoreply: yes\n")).reason is Reason.OUT_OF_OFFICE
    wording = _reply("Subject: Re: offers\n", "Hello, I am out of the office until Monday.\n")
    assert parse_bounce(wording).reason is Reason.OUT_OF_OFFICE


def test_a_message_without_from_is_not_taken_for_the_null_sender() -> None:
    """Clients and gateways drop From; only "From: <>" (or MAILER-DAEMON) is the mail system writing."""
    raw = (
        b"Subject: =?windows-1250?Q?Automatyczna_odpowied=9F:_test?=\n"
        b"MIME-Version: 1.0\nContent-Type: text/plain\n\ntoto\n"
    )
    report = parse_bounce(raw)
    assert (report.is_bounce, report.kind, report.reason) == (False, Kind.NONE, Reason.OUT_OF_OFFICE)
    plain = parse_bounce(b"Subject: Stop adware\n\nGet your free scan now.\n")
    assert (plain.is_bounce, plain.kind) == (False, Kind.NONE)
    null_sender = parse_bounce(b"From: <>\nSubject: Notice\n\nYour message to a@b.test was rejected.\n")
    assert null_sender.is_bounce and null_sender.kind is Kind.SOFT


def test_a_delivery_report_without_readable_fields_is_still_a_failure() -> None:
    raw = (
        "From: <foo@bar.test>\nTo: <foo@bar.test>\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain; charset=utf-8\n\n\u6b21\u306e\u53d7\u4fe1\u8005\n--B--\n"
    ).encode()
    report = parse_bounce(raw)
    assert (report.is_bounce, report.kind, report.reason, report.scope) == (
        True,
        Kind.SOFT,
        Reason.OTHER,
        "none",
    )


def test_unrecognised_message_is_not_a_bounce() -> None:
    report = parse_bounce(_reply("Subject: Question about my order\n", "Where is my parcel?\n"))
    assert (report.is_bounce, report.kind, report.reason) == (False, Kind.NONE, Reason.OTHER)
    assert report.recipients == []


def test_complaint_is_not_a_bounce() -> None:
    report = parse_bounce((CORPUS / "bounce_email" / "bounce-auto-respond.eml").read_bytes())
    assert (report.is_bounce, report.kind) == (False, Kind.NONE)


def test_bounce_nested_in_a_forwarded_message() -> None:
    report = parse_bounce((CORPUS / "dsn_15.txt").read_bytes())
    assert (report.source, report.kind, report.reason) == ("dsn", Kind.HARD, Reason.USER_UNKNOWN)
    # the Message-ID of the forwarded report is not the bounced message's
    assert report.original_message_id == "<mailman.4360.1149475419.1567.gpc-talk@grizz.org>"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_are_read_without_error(raw: bytes) -> None:
    report = parse_bounce(raw)
    assert report.is_bounce == (report.kind is not Kind.NONE)
    parse_complaint(raw)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=500))
def test_any_delivery_status_body_is_read_without_error(fields: str) -> None:
    report = parse_bounce(_dsn(fields))
    assert report.verp_token == "t0k3n"


_GLOBAL_DSN = """\
From: MAILER-DAEMON@mx.example.test (Mail Delivery System)
To: bounces+t0k3n@mail.estafeta.test
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain; charset=utf-8

This is the mail system at host mx.example.test.

--B
Content-Type: message/global-delivery-status
Content-Transfer-Encoding: {encoding}

{status}
--B
Content-Type: message/global-headers

Message-ID: <m1@mail.estafeta.test>
Subject: Grüße

--B--
"""
_GLOBAL_STATUS = """Reporting-MTA: dns; mx.example.test

Final-Recipient: utf-8; jörg@bücher.example
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <jörg@bücher.example>: Recipient address rejected: User unknown

Final-Recipient: utf-8; j\\x{F6}rn@example.test
Action: delayed
Status: 4.2.2
Diagnostic-Code: smtp; 452 4.2.2 Mailbox full
"""


@pytest.mark.parametrize("encoding", ["8bit", "base64", "quoted-printable"])
def test_an_internationalized_dsn_is_read_like_a_classic_one(encoding: str) -> None:
    """RFC 6533: SMTPUTF8 servers report in message/global-delivery-status, with utf-8 address types
    (non-ASCII written as is or as \\x{HHHH}), in any transfer encoding."""
    status = _GLOBAL_STATUS.encode()
    body = {
        "8bit": status,
        "base64": base64.encodebytes(status),
        "quoted-printable": quopri.encodestring(status),
    }[encoding].decode("ascii" if encoding != "8bit" else "utf-8")
    report = parse_bounce(_GLOBAL_DSN.format(encoding=encoding, status=body).encode())
    verdicts = {r.address: (r.verdict.kind, r.status) for r in report.recipients}
    assert verdicts == {
        "jörg@bücher.example": (Kind.HARD, "5.1.1"),
        "jörn@example.test": (Kind.SOFT, "4.2.2"),
    }
    assert report.original_message_id == "<m1@mail.estafeta.test>"
