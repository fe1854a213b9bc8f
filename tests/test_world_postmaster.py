"""The simulated providers' Postmaster Tools: SPF checks, reputation bands, counters and the HTTP service."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from estafeta.world.postmaster import PostmasterBook, PostmasterServer, reputation, spf_result
from estafeta.world.providers import PROVIDERS, zone_records
from estafeta.world.receivers import Received
from estafeta.world.zone import WorldZone

YAHOO = next(p for p in PROVIDERS if p.domain == "yahoo.test")


def _zone() -> WorldZone:
    forward, reverse = zone_records(PROVIDERS)
    extra = 'acme.test. 300 IN TXT "v=spf1 ip4:127.0.0.0/8 ~all"\nstrict.test. 300 IN TXT "v=spf1 -all"\n'
    return WorldZone(forward + extra, reverse)


def test_spf_checks_the_envelope_domain_against_the_client_address() -> None:
    zone = _zone()
    assert spf_result(zone, "bounces+abc@bounces.estafeta.test", "127.0.0.1") == "pass"  # a:mta.estafeta.test
    assert spf_result(zone, "bounces+abc@bounces.estafeta.test", "127.0.0.50") == "fail"  # no pool address
    assert spf_result(zone, "x@acme.test", "127.0.0.9") == "pass"
    assert spf_result(zone, "x@strict.test", "127.0.0.1") == "fail"
    assert spf_result(zone, "x@unpublished.test", "127.0.0.1") == "none"
    assert spf_result(zone, "", "127.0.0.1") == "none"


@pytest.mark.parametrize(
    ("spam", "authenticated", "band"),
    [
        (0.0, 1.0, "HIGH"),
        (0.002, 1.0, "MEDIUM"),
        (0.0, 0.95, "MEDIUM"),
        (0.005, 1.0, "LOW"),
        (0.02, 1.0, "BAD"),
        (0.0, 0.3, "BAD"),
    ],
)
def test_reputation_bands(spam: float, authenticated: float, band: str) -> None:
    assert reputation(spam, authenticated) == band


def _received(rcpt: list[str], dkim: str, mail_from: str = "bounces+t@bounces.estafeta.test") -> Received:
    data = b"From: Acme <news@Acme.test>\r\nTo: x@yahoo.test\r\nSubject: hi\r\n\r\nbody\r\n"
    return Received(
        "yahoo.test", mail_from, rcpt, data, "127.0.0.1", True, dkim, datetime(2026, 5, 4, 10, tzinfo=UTC)
    )


async def test_figures_count_messages_authentication_and_complaints_and_are_served_over_http() -> None:
    book = PostmasterBook(_zone())
    book.after_accept(YAHOO, _received(["a@yahoo.test", "complainer1@yahoo.test"], "pass"))
    book.after_accept(YAHOO, _received(["b@yahoo.test", "c@yahoo.test"], "fail", "x@strict.test"))
    (day,) = book.figures("yahoo.test", "acme.test")
    assert day == {
        "date": "2026-05-04",
        "messages": 4,
        "spam_rate": 0.25,
        "dkim_pass_rate": 0.5,
        "spf_pass_rate": 0.5,
        "domain_reputation": "BAD",
    }
    server = PostmasterServer(book, ["yahoo.test", "gmail.test"])
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            found = await client.get("/yahoo.test/domains/acme.test/stats", params={"since": "2026-05-01"})
            assert found.status_code == 200 and found.json()["days"] == [day]
            assert (
                await client.get("/yahoo.test/domains/acme.test/stats", params={"date": "2026-05-04"})
            ).json()["days"] == [day]
            assert (
                await client.get("/yahoo.test/domains/acme.test/stats", params={"since": "2026-05-05"})
            ).status_code == 404
            assert (await client.get("/gmail.test/domains/acme.test/stats")).status_code == 404
            assert (await client.get("/nowhere.test/domains/acme.test/stats")).status_code == 404
            assert (
                await client.get("/yahoo.test/domains/acme.test/stats", params={"date": "May 4"})
            ).status_code == 400
            assert (await client.post("/yahoo.test/domains/acme.test/stats")).status_code == 405
    finally:
        await server.stop()
    book.reset()
    assert book.figures("yahoo.test", "acme.test") == []
