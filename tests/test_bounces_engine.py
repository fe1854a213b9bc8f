"""classify_message: one entry point for every kind of report, with what it suppresses and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from estafeta.bounces import Policy, classify_message

CORPUS = Path(__file__).parent / "data" / "bounces"


def _read(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


@pytest.mark.parametrize(
    ("raw", "verdict", "reason", "suppresses", "source"),
    [
        (
            b"550 5.1.1 <a@b.test>: Recipient address rejected: User unknown\n",
            "hard",
            "user-unknown",
            "global",
            "smtp",
        ),
        (b"421 4.7.0 [TSS04] Messages temporarily deferred\n", "soft", "rate-limited", "none", "smtp"),
        (
            b"Reporting-MTA: dns; mx.test\n\n"
            b"Final-Recipient: rfc822; a@b.test\nAction: failed\nStatus: 5.1.1\n",
            "hard",
            "user-unknown",
            "global",
            "dsn",
        ),
    ],
)
def test_bare_replies_and_fields(raw: bytes, verdict: str, reason: str, suppresses: str, source: str) -> None:
    found = classify_message(raw)
    assert (found.verdict, found.reason, found.suppresses, found.source) == (
        verdict,
        reason,
        suppresses,
        source,
    )
    assert found.evidence[0].rule == "format"


@pytest.mark.parametrize(
    ("name", "verdict", "reason", "recipients"),
    [
        ("anymail/ses-bounce.json", "hard", "user-unknown", ["jane@example.com"]),
        (
            "anymail/ses-multiple-bounce.json",
            "hard",
            "user-unknown",
            ["jane@example.com", "richard@example.com"],
        ),
        ("anymail/ses-complaint.json", "complaint", "abuse", ["richard@example.com"]),
        ("anymail/ses-delivery.json", "none", "delivered", ["jane@example.com"]),
    ],
)
def test_ses_notifications(name: str, verdict: str, reason: str, recipients: list[str]) -> None:
    found = classify_message(_read(name))
    assert (found.verdict, found.reason, found.recipients) == (verdict, reason, recipients)


def test_ses_notification_in_an_sns_envelope_and_in_a_mail() -> None:
    inner = _read("anymail/ses-complaint.json").decode()
    envelope = json.dumps({"Type": "Notification", "Message": inner}).encode()
    assert classify_message(envelope).verdict == "complaint"
    mail = b"From: no-reply@sns.amazonaws.test\nSubject: AWS Notification Message\n\n" + envelope
    assert classify_message(mail).verdict == "complaint"


def test_transient_ses_bounce_is_soft() -> None:
    notification = {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Transient",
            "bounceSubType": "MailboxFull",
            "bouncedRecipients": [{"emailAddress": "full@example.test"}],
        },
    }
    found = classify_message(json.dumps(notification).encode())
    assert (found.verdict, found.reason, found.suppresses) == ("soft", "mailbox-full", "none")


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("php_bounce_handler/fbl-hotmail.txt", "hotmail"),
        ("manta_mta/fbl-hotmailabuse.eml", "hotmail"),
        ("flanker/complaint-aol.eml", "arf"),
        ("php_bounce_handler/arf2.txt", "arf"),
    ],
)
def test_complaints_suppress_on_the_account(name: str, source: str) -> None:
    found = classify_message(_read(name))
    assert (found.verdict, found.suppresses, found.source) == ("complaint", "account", source)


def test_opt_out_reply_is_a_complaint() -> None:
    raw = b"From: Ana <ana@example.test>\nTo: bounces+t0k@rp.test\nSubject: Unsubscribe\n\n\n"
    found = classify_message(raw)
    assert (found.verdict, found.reason, found.recipients, found.source) == (
        "complaint",
        "opt-out",
        ["ana@example.test"],
        "opt-out",
    )


def test_auth_failure_report_suppresses_nothing() -> None:
    found = classify_message(_read("go_gmime/FBL-auth.eml"))
    assert (found.verdict, found.suppresses) == ("none", "none")


@pytest.mark.parametrize(
    "name", ["php_bounce_handler/vac3.eml", "php_bounce_handler/vac6.eml", "bounceparser/aol-vacation.msg"]
)
def test_out_of_office_is_never_a_bounce(name: str) -> None:
    found = classify_message(_read(name))
    assert (found.verdict, found.reason, found.suppresses) == ("none", "out-of-office", "none")


def test_policy_reaches_the_report() -> None:
    disabled = _read("bounceparser/user-unknown-disabled.msg")
    assert classify_message(disabled).suppresses == "none"
    assert classify_message(disabled, Policy(disabled_mailbox="global")).suppresses == "global"
