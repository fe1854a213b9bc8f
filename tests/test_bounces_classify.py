"""classify_reply: one SMTP reply in, a hard/soft verdict and a reason out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from estafeta.bounces import Kind, Reason, classify_failure, classify_reply, retry_advised
from estafeta.bounces.classify import find_reply_code, find_status, parse_status

HARD, SOFT, NONE = Kind.HARD, Kind.SOFT, Kind.NONE

# (code, text, kind, reason, enhanced status parsed from the text)
REPLIES = [
    # --- one row per reason, plain wording
    (
        550,
        "5.1.1 <a@b.test>: Recipient address rejected: User unknown in local recipient table",
        HARD,
        Reason.USER_UNKNOWN,
        "5.1.1",
    ),
    (550, "5.1.2 Host or domain name not found", HARD, Reason.NO_SUCH_DOMAIN, "5.1.2"),
    (552, "5.2.2 Mailbox full", SOFT, Reason.MAILBOX_FULL, "5.2.2"),
    (552, "5.3.4 Message size exceeds fixed limit", SOFT, Reason.MESSAGE_TOO_LARGE, "5.3.4"),
    (421, "4.3.2 Service shutting down", SOFT, Reason.SERVER_DOWN, "4.3.2"),
    (550, "5.7.1 Message rejected by content filter", SOFT, Reason.POLICY, "5.7.1"),
    (
        554,
        "5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
        SOFT,
        Reason.BLOCKLISTED,
        "5.7.1",
    ),
    (550, "5.7.1 Message rejected as spam", HARD, Reason.SPAM_CONTENT, "5.7.1"),
    (554, "5.7.0 Virus found in message", HARD, Reason.SPAM_CONTENT, "5.7.0"),
    (421, "4.7.0 Too many connections from your IP", SOFT, Reason.RATE_LIMITED, "4.7.0"),
    (451, "4.7.1 Greylisted, please retry in 300 seconds", SOFT, Reason.GREYLISTED, "4.7.1"),
    (554, "5.4.7 Delivery time expired", SOFT, Reason.EXPIRED, "5.4.7"),
    (550, "5.2.1 Mailbox disabled, not accepting messages", HARD, Reason.MAILBOX_DISABLED, "5.2.1"),
    (554, "5.7.1 <a@b.test>: Relay access denied", HARD, Reason.RELAY_DENIED, "5.7.1"),
    (550, "5.7.26 Unauthenticated email is not accepted", HARD, Reason.AUTHENTICATION, "5.7.26"),
    (451, "4.4.3 Temporary DNS lookup failure", SOFT, Reason.DNS_FAILURE, "4.4.3"),
    (500, "5.5.2 Syntax error, command unrecognized", SOFT, Reason.PROTOCOL, "5.5.2"),
    (530, "5.7.0 Must issue a STARTTLS command first", SOFT, Reason.SECURITY, "5.7.0"),
    (554, "Transaction failed", HARD, Reason.OTHER, None),
    (451, "Requested action aborted: local error in processing", SOFT, Reason.OTHER, None),
    # --- Gmail
    (
        550,
        "5.1.1 The email account that you tried to reach does not exist. Please try double-checking "
        "the recipient's email address for typos or unnecessary spaces.",
        HARD,
        Reason.USER_UNKNOWN,
        "5.1.1",
    ),
    (
        550,
        "5.2.1 The email account that you tried to reach is disabled.",
        HARD,
        Reason.MAILBOX_DISABLED,
        "5.2.1",
    ),
    (
        452,
        "4.2.2 The email account that you tried to reach is over quota.",
        SOFT,
        Reason.MAILBOX_FULL,
        "4.2.2",
    ),
    (
        550,
        "5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail requires all "
        "senders to authenticate with either SPF or DKIM.",
        HARD,
        Reason.AUTHENTICATION,
        "5.7.26",
    ),
    (
        421,
        "4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP "
        "address. To protect our users from spam, mail sent from your IP address has been temporarily rate "
        "limited.",
        SOFT,
        Reason.RATE_LIMITED,
        "4.7.28",
    ),
    (
        550,
        "5.7.1 Our system has detected that this message is likely unsolicited mail. To reduce the "
        "amount of spam sent to Gmail, this message has been blocked.",
        HARD,
        Reason.SPAM_CONTENT,
        "5.7.1",
    ),
    (
        552,
        "5.7.0 This message was blocked because its content presents a potential security issue.",
        HARD,
        Reason.SPAM_CONTENT,
        "5.7.0",
    ),
    # multi-line reply joined as the client receives it
    (
        550,
        "550-5.1.1 The email account that you tried to reach does not exist. Please try\n"
        "550-5.1.1 double-checking the recipient's email address for typos or\n"
        "550 5.1.1 unnecessary spaces.",
        HARD,
        Reason.USER_UNKNOWN,
        "5.1.1",
    ),
    # --- Yahoo
    (
        554,
        "delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0] - "
        "mta1.mail.yahoo.com",
        HARD,
        Reason.USER_UNKNOWN,
        None,
    ),
    (
        554,
        "delivery error: dd Sorry your message to x@yahoo.com cannot be delivered. This account has "
        "been disabled or discontinued [#102].",
        HARD,
        Reason.MAILBOX_DISABLED,
        None,
    ),
    (
        421,
        "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user "
        "complaints - 4.16.55.1",
        SOFT,
        Reason.RATE_LIMITED,
        "4.7.0",
    ),
    # --- Outlook / Microsoft 365
    (
        550,
        "5.5.0 Requested action not taken: mailbox unavailable (S2017062302)",
        HARD,
        Reason.USER_UNKNOWN,
        "5.5.0",
    ),
    (
        550,
        "5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet "
        "service provider since part of their network is on our block list (S3150).",
        SOFT,
        Reason.BLOCKLISTED,
        "5.7.1",
    ),
    (452, "4.2.2 mailbox full", SOFT, Reason.MAILBOX_FULL, "4.2.2"),
    (
        550,
        "5.4.1 Recipient address rejected: Access denied. AS(201806281)",
        HARD,
        Reason.USER_UNKNOWN,
        "5.4.1",
    ),
    # --- Postfix, Exim, qmail and friends
    (550, "Unrouteable address", HARD, Reason.USER_UNKNOWN, None),
    (450, "Greylisted for 5 minutes", SOFT, Reason.GREYLISTED, None),
    (552, "Mailbox full", SOFT, Reason.MAILBOX_FULL, None),
    (552, "Requested mail action aborted: user is over quota", SOFT, Reason.MAILBOX_FULL, None),
    (552, "message size exceeds maximum message size", SOFT, Reason.MESSAGE_TOO_LARGE, None),
    (553, "sorry, no mailbox here by that name. (#5.1.1)", HARD, Reason.USER_UNKNOWN, None),
    (550, "5.7.1 Client host rejected: listed at bl.spamcop.net", SOFT, Reason.BLOCKLISTED, "5.7.1"),
    (550, "Administrative prohibition", SOFT, Reason.POLICY, None),
]


@pytest.mark.parametrize(("code", "text", "kind", "reason", "status"), REPLIES)
def test_classify_reply(code: int, text: str, kind: Kind, reason: Reason, status: str | None) -> None:
    verdict = classify_reply(code, text)
    assert (verdict.kind, verdict.reason, verdict.status, verdict.code) == (kind, reason, status, code)
    assert verdict.detail


def test_every_reason_but_out_of_office_is_covered_by_the_table() -> None:
    assert set(Reason) - {row[3] for row in REPLIES} == {Reason.OUT_OF_OFFICE}


@pytest.mark.parametrize(
    ("text", "reason", "kind"),
    [
        ("Connection refused", Reason.SERVER_DOWN, SOFT),
        ("timed out after 300 seconds waiting for greeting", Reason.SERVER_DOWN, SOFT),
        ("TLS handshake failed: certificate verify failed", Reason.SERVER_DOWN, SOFT),
        ("NXDOMAIN: no such domain example.invalid", Reason.NO_SUCH_DOMAIN, HARD),
        ("DNS lookup timed out (SERVFAIL)", Reason.DNS_FAILURE, SOFT),
    ],
)
def test_no_reply_at_all(text: str, reason: Reason, kind: Kind) -> None:
    verdict = classify_reply(None, text)
    assert (verdict.kind, verdict.reason, verdict.code) == (kind, reason, None)
    assert text in verdict.detail


@pytest.mark.parametrize("code", [220, 250, 251])
def test_success_is_not_a_failure(code: int) -> None:
    verdict = classify_reply(code, "2.0.0 Ok: queued as 4F9A1")
    assert verdict.kind is NONE
    assert not retry_advised(verdict)


@pytest.mark.parametrize(
    ("code", "text", "kind", "reason"),
    [
        # the enhanced code names the reason; a transient class anywhere keeps the address alive
        (450, "5.1.1 user unknown", SOFT, Reason.USER_UNKNOWN),
        (550, "4.2.2 mailbox full", SOFT, Reason.MAILBOX_FULL),
        (550, "4.7.1 try again later", SOFT, Reason.POLICY),
        (421, "5.7.1 relay access denied", SOFT, Reason.RELAY_DENIED),
        # the enhanced code wins over wording it contradicts
        (550, "5.1.1 mailbox full", HARD, Reason.USER_UNKNOWN),
        (552, "5.2.2 user unknown", SOFT, Reason.MAILBOX_FULL),
    ],
)
def test_enhanced_status_contradicting_the_basic_code(
    code: int, text: str, kind: Kind, reason: Reason
) -> None:
    verdict = classify_reply(code, text)
    assert (verdict.kind, verdict.reason) == (kind, reason)


@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [
        (550, "Requested action not taken", HARD),
        (554, "No thanks", HARD),
        (421, "Service not available, closing transmission channel", SOFT),
        (452, "Requested action not taken: insufficient system storage", SOFT),
        (503, "Bad sequence of commands", HARD),
    ],
)
def test_codes_without_enhanced_status(code: int, text: str, kind: Kind) -> None:
    verdict = classify_reply(code, text)
    assert verdict.kind is kind
    assert verdict.status is None


@pytest.mark.parametrize("code", [100, 354, 600, 999])
def test_out_of_range_code_is_a_soft_protocol_error(code: int) -> None:
    assert (classify_reply(code, "").kind, classify_reply(code, "").reason) == (SOFT, Reason.PROTOCOL)


def test_retry_advised_only_for_soft() -> None:
    assert retry_advised(classify_reply(452, "4.2.2 mailbox full"))
    assert not retry_advised(classify_reply(550, "5.1.1 user unknown"))
    assert not retry_advised(classify_reply(250, "ok"))


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("550-5.1.1 The email account", "5.1.1"),
        ("5.7.26 Unauthenticated", "5.7.26"),
        ("#4.4.1 no route", "4.4.1"),
        ("550 user unknown", None),
        ("5.1.1.3 is an address, not a code", None),
    ],
)
def test_parse_status_at_the_start(text: str, status: str | None) -> None:
    assert parse_status(text) == status


@pytest.mark.parametrize(
    ("text", "status", "code"),
    [
        ("host mx.b.test[192.0.2.7] said: 550 5.1.1 <a@b.test>: User unknown", "5.1.1", 550),
        ("Sorry, no mailbox here by that name. (#5.1.1)", "5.1.1", None),
        ("This is the Postfix 2.3.3 program at host 10.1.2.3", None, None),
        ("Remote host said: 552 Quota violation", None, 552),
        ("[SMTP Error Code 550]", None, 550),
    ],
)
def test_codes_found_in_bounce_text(text: str, status: str | None, code: int | None) -> None:
    assert (find_status(text), find_reply_code(text)) == (status, code)


def test_failure_report_without_any_code_is_permanent_unless_worded_as_temporary() -> None:
    assert classify_failure("Delivery to the following recipient failed permanently").kind is HARD
    assert classify_failure("Processing error. Please try to resend this message.").kind is SOFT
    assert classify_failure("user unknown", transient=True).kind is SOFT


@settings(max_examples=300, deadline=None)
@given(st.integers(200, 599), st.text(max_size=300))
def test_reply_class_bounds_the_kind(code: int, text: str) -> None:
    kind = classify_reply(code, text).kind
    if code < 300:
        assert kind is NONE
    elif code < 500:
        assert kind is SOFT
    else:
        assert kind is not NONE
