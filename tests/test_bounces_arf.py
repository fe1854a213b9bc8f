"""parse_complaint: feedback-loop reports in the Abuse Reporting Format (RFC 5965)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from estafeta.bounces import parse_complaint

CORPUS = Path(__file__).parent / "data" / "bounces"

# The example report of RFC 5965 section 5 (Appendix B.2 has the same shape).
RFC_5965_EXAMPLE = b"""\
From: <abusedesk@example.com>
Date: Thu, 8 Mar 2005 17:40:36 EDT
Subject: FW: Earn money
To: <abuse@example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
     boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP
192.0.2.1 on Thu, 8 Mar 2005 14:00:00 EDT.  For more information
about this format please see http://www.mipassoc.org/arf/.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <somespammer@example.net>
Original-Rcpt-To: <user@example.com>
Arrival-Date: Thu, 8 Mar 2005 14:00:00 EDT
Reporting-MTA: dns; mail.example.com
Source-IP: 192.0.2.1
Authentication-Results: mail.example.com;
               spf=fail smtp.mail=somespammer@example.com
Reported-Domain: example.net
Reported-Uri: http://example.net/earn_money.html
Reported-Uri: mailto:user@example.com
Removal-Recipient: user@example.com

--part1_13d.2e68ed54_boundary
Content-Type: message/rfc822
Content-Disposition: inline

From: <somespammer@example.net>
Received: from mailserver.example.net (mailserver.example.net
        [192.0.2.1]) by example.com with ESMTP id M63d4137594e46;
        Thu, 08 Mar 2005 14:00:00 -0400
To: <Undisclosed Recipients>
Subject: Earn money
MIME-Version: 1.0
Content-type: text/plain
Message-ID: 8787KJKJ3K4J3K4J3K4J3.mail@example.net
Date: Thu, 02 Sep 2004 12:31:03 -0500

Spam Spam Spam
Spam Spam Spam
Spam Spam Spam
Spam Spam Spam
--part1_13d.2e68ed54_boundary--
"""


def test_rfc_5965_example() -> None:
    complaint = parse_complaint(RFC_5965_EXAMPLE)
    assert complaint is not None
    assert complaint.feedback_type == "abuse"
    assert (complaint.user_agent, complaint.version) == ("SomeGenerator/1.0", "1")
    assert complaint.original_mail_from == "somespammer@example.net"
    assert complaint.original_rcpt_to == "user@example.com"
    assert complaint.reported_domain == "example.net"
    assert complaint.source_ip == "192.0.2.1"
    assert complaint.arrival_date == datetime(2005, 3, 8, 18, 0, tzinfo=UTC)  # 14:00 EDT
    assert complaint.original_message_id == "8787KJKJ3K4J3K4J3K4J3.mail@example.net"
    assert complaint.feedback_id is None
    assert complaint.verp_token is None


# What a provider sends back for a message the platform signed: the headers-only third part.
OUR_MESSAGE_REPORTED = b"""\
From: feedbackloop@fbl.example.test
To: fbl@mail.estafeta.test
Subject: Complaint about message from 203.0.113.9
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="ARF"

--ARF
Content-Type: text/plain

A user of example.test marked your message as spam.

--ARF
Content-Type: message/feedback-report

Feedback-Type: Abuse
User-Agent: ExampleFBL/2.3
Version: 1
Original-Mail-From: <bounces+c8f1e2@mail.estafeta.test>
Original-Rcpt-To: <reader@example.test>
Arrival-Date: Mon, 05 Jan 2026 09:15:00 +0100
Source-IP: 203.0.113.9
Reported-Domain: shop.example.test

--ARF
Content-Type: text/rfc822-headers

Return-Path: <bounces+c8f1e2@mail.estafeta.test>
From: Shop <news@shop.example.test>
To: reader@example.test
Subject: Winter sale
Message-ID: <20260105.c8f1e2@mail.estafeta.test>
Feedback-ID: campaign-7:account-3:estafeta
--ARF--
"""


def test_report_of_our_own_message() -> None:
    complaint = parse_complaint(OUR_MESSAGE_REPORTED)
    assert complaint is not None
    assert complaint.feedback_type == "abuse"  # field values are case-insensitive
    assert complaint.original_rcpt_to == "reader@example.test"
    assert complaint.arrival_date == datetime(2026, 1, 5, 8, 15, tzinfo=UTC)
    assert complaint.original_message_id == "<20260105.c8f1e2@mail.estafeta.test>"
    assert complaint.feedback_id == "campaign-7:account-3:estafeta"
    assert complaint.verp_token == "c8f1e2"


def test_verp_token_from_the_envelope_when_the_headers_are_missing() -> None:
    raw = OUR_MESSAGE_REPORTED.split(b"--ARF\nContent-Type: text/rfc822-headers")[0] + b"--ARF--\n"
    complaint = parse_complaint(raw)
    assert complaint is not None
    assert complaint.verp_token == "c8f1e2"
    assert complaint.original_message_id is None


def test_not_spam_and_unparseable_date() -> None:
    raw = OUR_MESSAGE_REPORTED.replace(b"Feedback-Type: Abuse", b"Feedback-Type: not-spam").replace(
        b"Arrival-Date: Mon, 05 Jan 2026 09:15:00 +0100", b"Arrival-Date: yesterday"
    )
    complaint = parse_complaint(raw)
    assert complaint is not None
    assert (complaint.feedback_type, complaint.arrival_date) == ("not-spam", None)


def test_real_world_report() -> None:
    complaint = parse_complaint((CORPUS / "bounce_email" / "bounce-auto-respond.eml").read_bytes())
    assert complaint is not None
    assert (complaint.feedback_type, complaint.user_agent, complaint.version) == (
        "abuse",
        "SocketLabs",
        "0.1",
    )
    assert complaint.reported_domain == "service.socketlabs.com"
    assert complaint.original_message_id == (
        "<CACQ2dkWXpyrApeChaPtnREf0V7FME4Rd_5bR56DNi=B_quWqCA@mail.gmail.com>"
    )


def test_not_an_arf_report() -> None:
    assert parse_complaint((CORPUS / "dsn_11.txt").read_bytes()) is None
    assert parse_complaint(b"From: a@example.test\nSubject: hi\n\nhello\n") is None


def test_hotmail_complaint_without_a_feedback_report_part() -> None:
    complaint = parse_complaint((CORPUS / "php_bounce_handler" / "fbl-hotmail.txt").read_bytes())
    assert complaint is not None and complaint.is_complaint
    assert (complaint.source, complaint.feedback_type, complaint.source_ip) == (
        "hotmail",
        "abuse",
        "24.64.1.1",
    )
    assert complaint.original_rcpt_to == "somerecipient@hotmail.com"


def test_an_ordinary_message_mentioning_complaints_is_none() -> None:
    assert parse_complaint((CORPUS / "bounceparser" / "autoreply.msg").read_bytes()) is None


def test_auth_failure_report_is_not_a_complaint() -> None:
    complaint = parse_complaint((CORPUS / "go_gmime" / "FBL-auth.eml").read_bytes())
    assert complaint is not None and complaint.feedback_type == "auth-failure"
    assert not complaint.is_complaint


def test_opt_out_report_is_a_complaint() -> None:
    complaint = parse_complaint((CORPUS / "php_bounce_handler" / "arf2.txt").read_bytes())
    assert complaint is not None and (complaint.feedback_type, complaint.is_complaint) == ("opt-out", True)
