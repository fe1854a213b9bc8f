"""classify_reply / classify_failure: one SMTP reply or diagnostic in, a verdict with its evidence out."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from estafeta.bounces import Kind, Policy, Reason, classify_failure, classify_reply, retry_advised
from estafeta.bounces.classify import (
    _MAX_WORDS,
    _TEXT_REASONS,
    _required_literals,
    find_reply_code,
    find_stage,
    find_status,
    parse_status,
)

CORPUS = Path(__file__).parent / "data" / "bounces"

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
    (550, "5.1.6 recipient no longer on server: a@b.test", HARD, Reason.HAS_MOVED, "5.1.6"),
    (556, "5.1.10 Recipient address has null MX", HARD, Reason.NOT_ACCEPTING, "5.1.10"),
    (552, "5.2.2 Mailbox full", SOFT, Reason.MAILBOX_FULL, "5.2.2"),
    (552, "5.3.4 Message size exceeds fixed limit", SOFT, Reason.MESSAGE_TOO_LARGE, "5.3.4"),
    (550, "5.7.1 Message rejected as spam by Content Filtering", SOFT, Reason.SPAM_CONTENT, "5.7.1"),
    (554, "5.7.0 Virus found in message", SOFT, Reason.SPAM_CONTENT, "5.7.0"),
    (
        554,
        "5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
        SOFT,
        Reason.BLOCKLISTED,
        "5.7.1",
    ),
    (550, "5.7.26 Unauthenticated email is not accepted", SOFT, Reason.AUTHENTICATION, "5.7.26"),
    (550, "5.7.1 <a@b.test>: Sender address rejected: Access denied", SOFT, Reason.SENDER_REJECTED, "5.7.1"),
    (554, "5.7.1 <a@b.test>: Relay access denied", SOFT, Reason.RELAY_DENIED, "5.7.1"),
    (550, "5.7.1 Message rejected by local policy", SOFT, Reason.POLICY, "5.7.1"),
    (421, "4.7.0 Too many connections from your IP", SOFT, Reason.RATE_LIMITED, "4.7.0"),
    (451, "4.7.1 Greylisted, please retry in 300 seconds", SOFT, Reason.GREYLISTED, "4.7.1"),
    (554, "5.4.7 Delivery time expired", SOFT, Reason.EXPIRED, "5.4.7"),
    (550, "5.2.1 Mailbox disabled, not accepting messages", SOFT, Reason.MAILBOX_DISABLED, "5.2.1"),
    (
        550,
        "5.7.1 This recipient is only accepting mail from specific email addresses",
        SOFT,
        Reason.FILTERED,
        "5.7.1",
    ),
    (451, "4.4.3 Temporary DNS lookup failure", SOFT, Reason.DNS_FAILURE, "4.4.3"),
    (554, "5.4.14 Hop count exceeded - possible mail loop", SOFT, Reason.SYSTEM_ERROR, "5.4.14"),
    (421, "4.3.2 Service shutting down", SOFT, Reason.SERVER_DOWN, "4.3.2"),
    (500, "5.5.2 Syntax error, command unrecognized", SOFT, Reason.PROTOCOL, "5.5.2"),
    (530, "5.7.0 Must issue a STARTTLS command first", SOFT, Reason.SECURITY, "5.7.0"),
    (554, "Transaction failed", SOFT, Reason.OTHER, None),
    # --- the provider wording that decides (postmaster pages)
    (
        550,
        "5.1.1 The email account that you tried to reach does not exist. Please try double-checking the "
        "recipient's email address for typos or unnecessary spaces.",
        HARD,
        Reason.USER_UNKNOWN,
        "5.1.1",
    ),
    (
        550,
        "550-5.1.1 The email account that you tried to reach does not exist. Please try\n"
        "550-5.1.1 double-checking the recipient's email address for typos or\n550 5.1.1 unnecessary spaces.",
        HARD,
        Reason.USER_UNKNOWN,
        "5.1.1",
    ),
    (
        550,
        "5.2.1 The email account that you tried to reach is disabled.",
        SOFT,
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
        "5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail requires all senders "
        "to authenticate with either SPF or DKIM.",
        SOFT,
        Reason.AUTHENTICATION,
        "5.7.26",
    ),
    (
        550,
        "5.7.25 The IP address sending this message does not have a PTR record setup",
        SOFT,
        Reason.AUTHENTICATION,
        "5.7.25",
    ),
    (
        421,
        "4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP "
        "address.",
        SOFT,
        Reason.RATE_LIMITED,
        "4.7.28",
    ),
    (
        550,
        "5.7.1 Our system has detected that this message is likely unsolicited mail.",
        SOFT,
        Reason.SPAM_CONTENT,
        "5.7.1",
    ),
    (
        554,
        "delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0]",
        HARD,
        Reason.USER_UNKNOWN,
        None,
    ),
    (
        554,
        "delivery error: dd Sorry your message to x@yahoo.com cannot be delivered. This account has been "
        "disabled or discontinued [#102].",
        SOFT,
        Reason.MAILBOX_DISABLED,
        None,
    ),
    (
        421,
        "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user "
        "complaints",
        SOFT,
        Reason.RATE_LIMITED,
        "4.7.0",
    ),
    (
        550,
        "5.5.0 Requested action not taken: mailbox unavailable (S2017062302)",
        HARD,
        Reason.USER_UNKNOWN,
        "5.5.0",
    ),
    (
        550,
        "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        HARD,
        Reason.USER_UNKNOWN,
        "5.1.10",
    ),
    (
        550,
        "5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet service "
        "provider since part of their network is on our block list (S3150).",
        SOFT,
        Reason.BLOCKLISTED,
        "5.7.1",
    ),
    (550, "5.7.606 Access denied, banned sending IP [192.0.2.1]", SOFT, Reason.BLOCKLISTED, "5.7.606"),
    (
        550,
        "5.7.1 [BL21] Connections will not be accepted from 192.0.2.1, because the ip is in Spamhaus's list",
        SOFT,
        Reason.BLOCKLISTED,
        "5.7.1",
    ),
    (554, "5.7.9 Message not accepted for policy reasons", SOFT, Reason.POLICY, "5.7.9"),
    (
        550,
        "5.1.1 boite du destinataire archivee. archived recipient. OFR_417",
        SOFT,
        Reason.MAILBOX_DISABLED,
        "5.1.1",
    ),
    (
        550,
        "5.5.0 <a@orange.test>: adresse d au moins un destinataire invalide. invalid recipient. OFR_416",
        HARD,
        Reason.USER_UNKNOWN,
        "5.5.0",
    ),
    (552, "5.2.2 boite du destinataire pleine. OFR_422", SOFT, Reason.MAILBOX_FULL, "5.2.2"),
    (550, "5.1.1 <a@b.test> Recipient not found. <http://x.co/irbounce>", HARD, Reason.USER_UNKNOWN, "5.1.1"),
    (554, "5.7.1 IB605 refused due to the IP being blocked", SOFT, Reason.BLOCKLISTED, "5.7.1"),
    (550, "Unknown user a@docomo.ne.jp", HARD, Reason.USER_UNKNOWN, None),
    (552, "too much mail data", SOFT, Reason.MAILBOX_FULL, None),
    (550, "Unrouteable address", HARD, Reason.USER_UNKNOWN, None),
    (553, "sorry, no mailbox here by that name. (#5.1.1)", HARD, Reason.USER_UNKNOWN, "5.1.1"),
]


@pytest.mark.parametrize(("code", "text", "kind", "reason", "status"), REPLIES)
def test_classify_reply(code: int, text: str, kind: Kind, reason: Reason, status: str | None) -> None:
    verdict = classify_reply(code, text)
    assert (verdict.kind, verdict.reason, verdict.status, verdict.code) == (kind, reason, status, code)
    assert verdict.detail and verdict.evidence


def test_every_reason_but_the_non_failures_is_covered_by_the_table() -> None:
    assert set(Reason) - {row[3] for row in REPLIES} == {Reason.DELIVERED, Reason.OUT_OF_OFFICE}


@pytest.mark.parametrize(
    ("code", "text", "reason"),
    [
        # words of a live mailbox beat a "dead" status code …
        (552, "552 <a@b.test> is over quota temporarily (#5.1.1)", Reason.MAILBOX_FULL),
        (550, "5.1.1 <a@b.test> has sent to too many recipients this hour", Reason.RATE_LIMITED),
        (552, "Too many recipients", Reason.RATE_LIMITED),
        (550, "5.2.1 <a@b.test> rate limit exceeded, try again later", Reason.RATE_LIMITED),
        (550, "5.1.1 RCPT TO:<a@b.test> max message size exceeded", Reason.MESSAGE_TOO_LARGE),
        # … and a code whose meaning is alive beats words of a dead address
        (552, "5.2.2 user unknown", Reason.MAILBOX_FULL),
    ],
)
def test_live_wording_or_code_is_never_a_dead_address(code: int, text: str, reason: Reason) -> None:
    verdict = classify_reply(code, text)
    assert (verdict.kind, verdict.reason, verdict.scope) == (SOFT, reason, "none")


@pytest.mark.parametrize(
    ("code", "text", "reason"),
    [
        (550, "5.4.1 Recipient address rejected: Access denied. AS(201806281)", Reason.USER_UNKNOWN),
        (550, "550 #5.1.0 Address rejected", Reason.USER_UNKNOWN),
        (554, "5.4.4 the domain is not reachable", Reason.NO_SUCH_DOMAIN),
        (550, "DNS lookup failure: host mx.gone.test not found", Reason.NO_SUCH_DOMAIN),
        (550, "5.7.1 No such user c18si2365148hub", Reason.USER_UNKNOWN),
    ],
)
def test_dead_addresses_under_other_codes_are_hard(code: int, text: str, reason: Reason) -> None:
    verdict = classify_reply(code, text)
    assert (verdict.kind, verdict.reason, verdict.scope) == (HARD, reason, "global")


@pytest.mark.parametrize(
    ("code", "text"),
    [
        # RFC 3463 X.1.7 and X.1.8 are the sender's address: "not a valid address" under them is the sender's
        (553, "5.1.7 The sender address <me@sender.test> is not a valid RFC 5321 address."),
        (550, "5.1.8 <me@sender.invalid>: Sender address rejected: Domain not found"),
        (553, "5.1.7 Invalid address"),
        # the words name the sender's domain, whatever the code says of the destination
        (550, "5.1.2 Sender Domain Not Found"),
        (550, "The sender's email address <me@sender.test> does not exist"),
    ],
)
def test_a_dead_sender_address_is_never_a_dead_recipient(code: int, text: str) -> None:
    verdict = classify_reply(code, text)
    assert (verdict.kind, verdict.reason, verdict.scope, verdict.blame) == (
        SOFT,
        Reason.SENDER_REJECTED,
        "none",
        "sender",
    )


@pytest.mark.parametrize(
    "text",
    [
        "5.7.510 Access denied, [contoso.test] does not accept email over IPv6",
        "5.7.1 example.test does not accept mail from your IP address",
        "example.test does not accept mail larger than 10 MB",
    ],
)
def test_a_qualified_refusal_is_not_a_domain_that_takes_no_mail(text: str) -> None:
    verdict = classify_reply(550, text)
    assert verdict.kind is SOFT and verdict.reason is not Reason.NOT_ACCEPTING and verdict.scope == "none"
    assert classify_reply(550, "5.1.10 example.test does not accept mail").reason is Reason.NOT_ACCEPTING


@pytest.mark.parametrize(
    "text",
    [
        "VS1-IP Excessive unknown recipients - possible Open Relay (#5.1.8)",
        "5.1.1 Too many invalid recipients from your server",
        "5.7.1 High number of non-existent users, try again later",
    ],
)
def test_the_senders_many_unknown_recipients_are_not_this_recipients_death(text: str) -> None:
    verdict = classify_reply(550, text)
    assert (verdict.kind, verdict.reason, verdict.scope) == (SOFT, Reason.RATE_LIMITED, "none")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "5.2.1 The user you are trying to contact is receiving email at a rate that prevents additional "
            "messages from being delivered.",
            Reason.RATE_LIMITED,
        ),
        (
            "5.2.1 <a@b.test>: Mailbox received too much email in a short period of time (G30)",
            Reason.RATE_LIMITED,
        ),
        ("5.2.1 <a@b.test>: The recipient's server was temporarily unavailable", Reason.SERVER_DOWN),
        ("5.2.2 STOREDRV.Submission.Exception:SubmissionQuotaExceededException", Reason.RATE_LIMITED),
        ("User has too many messages on the server.", Reason.MAILBOX_FULL),
    ],
)
def test_a_busy_or_full_mailbox_is_not_disabled_even_when_disabled_mailboxes_are_suppressed(
    text: str, reason: Reason
) -> None:
    verdict = classify_reply(550, text, policy=Policy(disabled_mailbox="global"))
    assert (verdict.kind, verdict.reason, verdict.scope) == (SOFT, reason, "none")


def test_a_closed_account_is_a_disabled_mailbox() -> None:
    verdict = classify_reply(550, "<a@b.test>: Recipient address rejected: Account Closed")
    assert (verdict.kind, verdict.reason, verdict.scope) == (SOFT, Reason.MAILBOX_DISABLED, "none")


@pytest.mark.parametrize(
    "text",
    [
        "all hosts have been failing for a long time and were last tried after this message arrived",
        "Could not deliver for the last 432000 seconds. Giving up.",
        "Local delivery error: system error while writing to the mailbox",
        "Syntax error in parameters or arguments",
        "too many connections from your host",
        "You do not have permission to post to this group",
        "421 4.3.0 please try later",
        "Something went wrong, nobody knows what",
    ],
)
def test_unrecognised_and_give_up_failures_never_suppress(text: str) -> None:
    verdict = classify_failure(text)
    assert verdict.kind is SOFT and verdict.scope == "none"


def test_give_up_is_expired_and_soft() -> None:
    verdict = classify_failure("retry timeout exceeded")
    assert (verdict.kind, verdict.reason) == (SOFT, Reason.EXPIRED)


@pytest.mark.parametrize(
    ("text", "stage"),
    [
        ("host mx.b.test said: 550 5.1.1 <a@b.test>: User unknown (in reply to RCPT TO command)", "rcpt"),
        ("said: 554 5.7.1 Spam detected (in reply to end of DATA command)", "data"),
        ("SMTP error from remote mail server after MAIL FROM:<x@y.test>: 550 Unroutable sender", "mail"),
        (
            "... while talking to mx.b.test.:\n>>> DATA\n<<< 550 User unknown\n<<< 503 need RCPT command",
            "rcpt",
        ),
        ("550 5.1.1 user unknown", None),
    ],
)
def test_stage_of_the_refusal(text: str, stage: str | None) -> None:
    assert find_stage(text)[0] == stage


def test_refusal_after_mail_from_is_the_senders() -> None:
    verdict = classify_reply(
        550, "5.1.1 <me@sender.test>: Sender address rejected: User unknown", stage="mail"
    )
    assert (verdict.kind, verdict.reason, verdict.blame) == (SOFT, Reason.SENDER_REJECTED, "sender")
    unroutable = classify_failure("said: 550 Unroutable sender address (in reply to MAIL FROM command)")
    assert (unroutable.kind, unroutable.reason) == (SOFT, Reason.SENDER_REJECTED)


def test_user_unknown_only_after_data_is_a_filter_not_a_dead_address() -> None:
    after_data = classify_reply(550, "5.1.1 <a@b.test>... User unknown", stage="data")
    assert (after_data.kind, after_data.reason, after_data.scope) == (SOFT, Reason.FILTERED, "none")
    at_rcpt = classify_reply(550, "5.1.1 <a@b.test>... User unknown", stage="rcpt")
    assert (at_rcpt.kind, at_rcpt.scope) == (HARD, "global")


@pytest.mark.parametrize(
    ("setting", "kind", "scope"),
    [("global", HARD, "global"), ("account", HARD, "account"), ("none", SOFT, "none")],
)
def test_disabled_mailbox_follows_the_operators_choice(setting: str, kind: Kind, scope: str) -> None:
    policy = Policy(disabled_mailbox=setting)  # type: ignore[arg-type]
    verdict = classify_reply(
        550, "5.2.1 The email account that you tried to reach is disabled.", policy=policy
    )
    assert (verdict.kind, verdict.reason, verdict.scope) == (kind, Reason.MAILBOX_DISABLED, scope)


@pytest.mark.parametrize(
    ("reason", "blame"),
    [
        (Reason.SPAM_CONTENT, "sender"),
        (Reason.AUTHENTICATION, "sender"),
        (Reason.MAILBOX_FULL, "recipient"),
        (Reason.SERVER_DOWN, "network"),
    ],
)
def test_blame(reason: Reason, blame: str) -> None:
    text = {
        Reason.SPAM_CONTENT: "spam",
        Reason.AUTHENTICATION: "DMARC policy",
        Reason.MAILBOX_FULL: "quota",
        Reason.SERVER_DOWN: "connection refused",
    }[reason]
    assert classify_failure(text).blame == blame


@pytest.mark.parametrize(
    ("text", "reason", "kind"),
    [
        ("Connection refused", Reason.SERVER_DOWN, SOFT),
        ("timed out after 300 seconds waiting for greeting", Reason.SERVER_DOWN, SOFT),
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
    assert (verdict.kind, verdict.reason) == (NONE, Reason.DELIVERED)
    assert not retry_advised(verdict)


def test_a_success_status_in_a_report_is_not_a_failure() -> None:
    assert classify_failure("250 2.1.5 Ok", status="2.1.5").kind is NONE


@pytest.mark.parametrize(
    ("code", "text", "kind", "reason"),
    [
        (450, "5.1.1 user unknown", SOFT, Reason.USER_UNKNOWN),
        (550, "4.2.2 mailbox full", SOFT, Reason.MAILBOX_FULL),
        (421, "5.7.1 relay access denied", SOFT, Reason.RELAY_DENIED),
    ],
)
def test_a_transient_class_anywhere_keeps_the_address_alive(
    code: int, text: str, kind: Kind, reason: Reason
) -> None:
    verdict = classify_reply(code, text)
    assert (verdict.kind, verdict.reason) == (kind, reason)
    assert retry_advised(verdict)


@pytest.mark.parametrize(
    ("code", "text", "retry"),
    [
        (550, "5.1.1 user unknown", False),
        (550, "5.7.1 spam detected", False),
        (550, "5.7.26 unauthenticated", False),
        (552, "5.2.2 mailbox full", True),
        (554, "5.7.1 client host blocked using zen.spamhaus.org", True),
        (451, "4.7.1 greylisted", True),
        (554, "Transaction failed", False),
    ],
)
def test_retry_only_what_a_later_attempt_can_get_past(code: int, text: str, retry: bool) -> None:
    assert retry_advised(classify_reply(code, text)) is retry


@pytest.mark.parametrize("code", [100, 354, 600, 999])
def test_out_of_range_code_is_a_soft_protocol_error(code: int) -> None:
    assert (classify_reply(code, "").kind, classify_reply(code, "").reason) == (SOFT, Reason.PROTOCOL)


def test_evidence_names_the_rules_and_words() -> None:
    verdict = classify_reply(552, "552 <a@b.test> is over quota temporarily (#5.1.1)")
    said = " / ".join(str(e) for e in verdict.evidence)
    assert "'quota' means mailbox-full" in said and "outweighs status 5.1.1" in said
    assert "not suppressed" in said


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


def test_failure_report_without_any_code_is_soft_unless_it_names_a_dead_address() -> None:
    assert classify_failure("Delivery to the following recipient failed permanently").kind is SOFT
    assert classify_failure("Processing error. Please try to resend this message.").kind is SOFT
    assert classify_failure("user unknown").kind is HARD
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


@pytest.mark.parametrize(
    "pattern, words",
    [
        (r"\bspam(?:ming)?\b|unsolicited|\bjunk\b", ("spam", "unsolicited", "junk")),
        (r"spam ?(?:score|assassin|profile)", ("score", "assassin", "profile")),
        (r"(?<!not )(?:is|are) listed (?:at|on)", (" listed ",)),
        (r"\bs3(?:1[45]0|140)\b", ("s31",)),
        (r"\bbl\d{3}\b|blocked using", None),  # "bl" is too short to be worth a look-up
        (r"(?:a|b)+ x", None),
    ],
)
def test_the_words_every_match_of_a_phrase_contains(pattern: str, words: tuple[str, ...] | None) -> None:
    assert _required_literals(pattern) == words


def test_the_word_shortcut_never_skips_a_phrase_that_matches() -> None:
    """Every phrase pattern of every reason, on the start of every text of the corpus (what is classified)."""
    texts = [
        path.read_bytes().decode("latin-1")[:_MAX_WORDS].lower()
        for path in sorted(CORPUS.rglob("*"))
        if path.is_file() and path.suffix != ".csv"
    ]
    checked = 0
    for _, phrases in _TEXT_REASONS:
        for pattern, words in phrases.patterns:
            if words is None:
                continue
            for text in texts:
                if pattern.search(text):
                    assert any(w in text for w in words), (pattern.pattern, words, text[:200])
                    checked += 1
    assert checked > 1000
