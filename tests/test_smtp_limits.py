"""Relay limits and content rules: token buckets per account, connections and failed logins per address,
Bcc removal."""

from __future__ import annotations

import pytest

from estafeta.clock import ManualClock
from estafeta.smtp.limits import AccountRateLimiter, ConnectionLimiter, LoginFailureLimiter
from estafeta.smtp.server import author_domains, reply_text, strip_bcc


def test_an_account_may_send_its_burst_then_its_rate() -> None:
    clock = ManualClock()
    limiter = AccountRateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.try_take(1) for _ in range(4)] == [True, True, True, False]
    clock.advance(0.25)
    assert not limiter.try_take(1)  # half a message earned so far
    clock.advance(0.25)
    assert limiter.try_take(1)
    assert not limiter.try_take(1)


def test_accounts_have_separate_buckets_that_refill_only_up_to_the_burst() -> None:
    clock = ManualClock()
    limiter = AccountRateLimiter(rate=10, burst=2, clock=clock)
    assert limiter.try_take(1) and limiter.try_take(1) and not limiter.try_take(1)
    assert limiter.try_take(2) and limiter.try_take(2)
    clock.advance(3600)
    assert [limiter.try_take(1) for _ in range(3)] == [True, True, False]


def test_a_rate_of_zero_is_unlimited() -> None:
    limiter = AccountRateLimiter(rate=0, burst=1, clock=ManualClock())
    assert all(limiter.try_take(1) for _ in range(1000))


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        AccountRateLimiter(rate=-1, burst=1, clock=ManualClock())
    with pytest.raises(ValueError):
        AccountRateLimiter(rate=1, burst=0, clock=ManualClock())
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


def test_failed_logins_lock_an_address_out_until_they_age_out() -> None:
    clock = ManualClock()
    logins = LoginFailureLimiter(max_failures=3, window=60, clock=clock)
    # Three checks under way at once use up the allowance before any of them has an answer.
    assert [logins.attempt("10.0.0.1") for _ in range(4)] == [True, True, True, False]
    logins.succeeded("10.0.0.1")  # one of them was right
    assert logins.attempt("10.0.0.1") and not logins.attempt("10.0.0.1")
    assert logins.attempt("10.0.0.2")  # other addresses are not affected
    clock.advance(61)
    assert logins.attempt("10.0.0.1")


def test_failed_logins_are_remembered_for_a_bounded_number_of_keys() -> None:
    clock = ManualClock()
    logins = LoginFailureLimiter(max_failures=2, window=60, clock=clock, max_keys=3)
    for user in ("a", "b", "c"):
        assert logins.attempt(user) and logins.attempt(user) and not logins.attempt(user)
    clock.advance(61)
    assert logins.attempt("d")  # room is made from keys whose failures aged out first
    clock.advance(1)
    for user in ("e", "f", "g"):  # then from the longest-remembered
        logins.attempt(user)
    assert len(logins._failures) == 3
    assert logins.attempt("e") and not logins.attempt("e")
