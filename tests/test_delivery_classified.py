"""What one delivery attempt records about a refusal: the verdict, the refused command, the suppression."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from estafeta.bounces import Policy
from estafeta.delivery.client import Reply
from estafeta.delivery.engine import classified
from estafeta.store import queue as q

JOB = q.Claimed(
    1, "m", 1, "ana@b.test", "b.test", "transactional", 0, datetime(2026, 1, 5, tzinfo=UTC), b"", False
)


@pytest.mark.parametrize(
    ("reply", "bounce", "retry"),
    [
        (
            Reply(550, "5.1.1 <ana@b.test>: Recipient address rejected: User unknown", "rcpt"),
            {
                "kind": "hard",
                "reason": "user-unknown",
                "scope": "global",
                "blame": "recipient",
                "stage": "rcpt",
            },
            False,
        ),
        (
            Reply(550, "5.1.1 <ana@b.test>... User unknown", "data"),
            {"kind": "soft", "reason": "filtered", "scope": "none", "blame": "recipient", "stage": "data"},
            False,
        ),
        (
            Reply(553, "5.1.8 <bounces+x@rp.test>: Sender address rejected: Domain not found", "mail"),
            {
                "kind": "soft",
                "reason": "sender-rejected",
                "scope": "none",
                "blame": "sender",
                "stage": "mail",
            },
            False,
        ),
        (
            Reply(452, "4.2.2 Mailbox full", "rcpt"),
            {
                "kind": "soft",
                "reason": "mailbox-full",
                "scope": "none",
                "blame": "recipient",
                "stage": "rcpt",
            },
            True,
        ),
        (
            Reply(None, "connection to mx.b.test [192.0.2.1]:25 failed: Connection refused"),
            {"kind": "soft", "reason": "server-down", "scope": "none", "blame": "network"},
            True,
        ),
    ],
)
def test_a_refusal_is_recorded_with_its_stage_and_scope(
    reply: Reply, bounce: dict[str, str], retry: bool
) -> None:
    result = classified(JOB, reply, {"mx": "mx.b.test"})
    recorded = {k: v for k, v in result.data["bounce"].items() if k != "status"}
    assert (recorded, result.retry, result.delivered) == (bounce, retry, False)


def test_the_operators_policy_reaches_delivery() -> None:
    reply = Reply(550, "5.2.1 The email account that you tried to reach is disabled.", "rcpt")
    default = classified(JOB, reply, {}).data["bounce"]
    strict = classified(JOB, reply, {}, Policy(disabled_mailbox="account")).data["bounce"]
    assert (default["kind"], default["scope"]) == ("soft", "none")
    assert (strict["kind"], strict["scope"]) == ("hard", "account")
