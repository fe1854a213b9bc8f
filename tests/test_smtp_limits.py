"""Relay limits and content rules: connections and failed logins per address, Bcc removal."""

from __future__ import annotations

import pytest

from estafeta.clock import ManualClock
from estafeta.limits import MemoryLimits
from estafeta.smtp.limits import ConnectionLimiter, LoginFailureLimiter
from estafeta.smtp.server import author_domains, reply_text, strip_bcc


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        LoginFailureLimiter(MemoryLimits(ManualClock()), "ip", max_failures=0, window=60)
    with pytest.raises(ValueError):
        ConnectionLimiter(0)


def test_connections_are_counted_per_address_and_released() -> None:
    limiter = ConnectionLimiter(max_per_ip=2)
    assert limiter.acquire("127.0.0.1") and limiter.acquire("127.0.0.1")
    assert not limiter.acquire("127.0.0.1")
    assert limiter.acquire("127.0.0.2")
    limiter.release("127.0.0.1")
    assert limiter.acquire("127.0.0.1")
    assert not limiter.acquire("127.0.0.1")


def test_bcc_fields_and_their_folded_lines_are_removed_and_nothing_else() -> None:
    raw = (
        b"From: a@acme.test\r\n"
        b"To: b@gmail.test\r\n"
        b"BCC: secret1@gmail.test,\r\n"
        b" secret2@gmail.test\r\n"
        b"Subject: Bcc: is mentioned here\r\n"
        b"\tand folded\r\n"
        b"Bcc : secret3@gmail.test\r\n"
        b"\r\n"
        b"Bcc: a body line stays\r\n"
    )
    assert strip_bcc(raw) == (
        b"From: a@acme.test\r\n"
        b"To: b@gmail.test\r\n"
        b"Subject: Bcc: is mentioned here\r\n"
        b"\tand folded\r\n"
        b"\r\n"
        b"Bcc: a body line stays\r\n"
    )
    without = b"From: a@acme.test\r\nSubject: x\r\n\r\nBcc: body\r\n"
    assert strip_bcc(without) is without


def test_author_domains_are_normalised_and_a_from_in_the_body_is_ignored() -> None:
    assert author_domains(
        b"From: Zo\xc3\xab <z@B\xc3\xbccher.test>, x@Acme.Test\r\nSender: s@acme.test\r\n\r\n"
    ) == [
        "xn--bcher-kva.test",
        "acme.test",
    ]
    assert author_domains(b"To: a@acme.test\r\n\r\nFrom: in the body@evil.test\r\n") == []


def test_reply_text_is_one_ascii_line() -> None:
    assert reply_text("headers.Subject: bad\r\nvalue\x00 — here") == "headers.Subject: bad value \\u2014 here"
    assert len(reply_text("x" * 5000)) == 400


async def test_failed_logins_lock_a_key_out_until_they_age_out_and_scopes_are_apart() -> None:
    clock = ManualClock()
    limits = MemoryLimits(clock)
    logins = LoginFailureLimiter(limits, "relay-login:ip", max_failures=3, window=60)
    users = LoginFailureLimiter(limits, "relay-login:user", max_failures=3, window=60)
    # Three checks under way at once use up the allowance before any of them has an answer.
    tokens = [await logins.attempt("10.0.0.1") for _ in range(4)]
    assert tokens[3] is None and tokens[0] is not None
    await logins.succeeded("10.0.0.1", tokens[0])  # one of them was right
    assert await logins.attempt("10.0.0.1") and await logins.attempt("10.0.0.1") is None
    assert await logins.attempt("10.0.0.2")  # other addresses are not affected
    assert await users.attempt("10.0.0.1")  # nor a username that happens to read the same
    clock.advance(61)
    assert await logins.attempt("10.0.0.1")
