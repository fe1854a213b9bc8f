"""MTA-STS (RFC 8461) for outbound mail and TLS-RPT (RFC 8460) reports, against the simulated world.

The world's `secure.test` publishes an `enforce` policy and presents a certificate from the world's
authority, which the platform trusts; `mxmismatch.test` names another MX host in its policy,
`badcert.test` presents a certificate for another name, `ststesting.test` is in `testing` mode with a
self-signed certificate. Reports go to the world's TLS-RPT receiver by mail and by HTTPS, where an
independent parser (parsedmarc) reads them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from estafeta.store import mta_sts as store
from estafeta.world import World
from tests.e2e.harness import Harness

DAY = 86400


def _events(view: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in view["events"] if e["type"] == kind]


async def test_enforce_policy_delivers_over_verified_tls(harness: Harness) -> None:
    message_id = await harness.send(to=["ana@secure.test"])
    view = await harness.wait_state(message_id, "delivered")
    (delivered,) = _events(view, "delivered")
    assert delivered["data"]["mta_sts"] == {"policy": "1", "mode": "enforce"}
    assert delivered["data"]["tls"] is True and delivered["data"]["mx"] == "mx.secure.test"
    (got,) = harness.world.received("secure.test")
    assert got.tls and got.rcpt_to == ["ana@secure.test"]
    assert harness.world.policies.fetches() == ["mta-sts.secure.test"]


async def _deferred_twice_never_delivered(h: Harness, recipient: str, provider: str) -> list[dict[str, Any]]:
    message_id = await h.send(to=[recipient])
    await h.wait_for(message_id, lambda v: len(_events(v, "deferred")) == 1)
    h.advance(3600)  # the first retry is due: refused again, for the same reason
    view = await h.wait_for(message_id, lambda v: len(_events(v, "deferred")) == 2)
    assert not h.world.received(provider)
    assert view["recipients"][0]["state"] == "deferred"
    return _events(view, "deferred")


async def test_an_mx_host_the_policy_does_not_name_is_never_used(harness: Harness) -> None:
    deferred = await _deferred_twice_never_delivered(harness, "bo@mxmismatch.test", "mxmismatch.test")
    for event in deferred:
        assert event["data"]["mta_sts"] == {"policy": "1", "mode": "enforce"}
        assert "does not list the MX host mx.mxmismatch.test" in event["data"]["reply"]
    assert harness.world.stats()["mxmismatch.test"].connections == 0  # not even a plaintext greeting


async def test_a_certificate_for_another_name_is_refused_and_mail_waits(harness: Harness) -> None:
    deferred = await _deferred_twice_never_delivered(harness, "cy@badcert.test", "badcert.test")
    for event in deferred:
        assert "certificate of mx.badcert.test" in event["data"]["reply"]
        assert "Hostname mismatch" in event["data"]["reply"]
    stats = harness.world.stats()["badcert.test"]
    assert stats.connections == 2 and stats.accepted == 0
    assert stats.tls_sessions == 0  # the platform abandoned each handshake: no command was sent


async def test_enforced_mail_bounces_when_it_expires_undelivered(fresh_world: World, tmp_path: Any) -> None:
    from tests.e2e.harness import start_harness

    h = await start_harness(fresh_world, f"sqlite:///{tmp_path / 'e2e.db'}", delivery={"max_age": 7200})
    try:
        message_id = await h.send(to=["di@badcert.test"])
        await h.wait_for(message_id, lambda v: len(_events(v, "deferred")) == 1)
        h.advance(7200)
        view = await h.wait_state(message_id, "bounced")
        (bounced,) = _events(view, "bounced")
        assert bounced["data"]["expired"] is True and "certificate" in bounced["data"]["reply"]
        assert not fresh_world.received("badcert.test")
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)


async def test_testing_policy_delivers_and_a_daily_report_goes_to_each_rua(harness: Harness) -> None:
    h = harness
    sent = [await h.send(to=[r]) for r in ("ed@ststesting.test", "fa@secure.test", "gu@mxmismatch.test")]
    await h.wait_state(sent[0], "delivered")
    await h.wait_state(sent[1], "delivered")
    await h.wait_for(sent[2], lambda v: bool(_events(v, "deferred")))
    (testing,) = h.world.received("ststesting.test")
    assert testing.tls  # testing mode: the self-signed certificate is reported, not refused
    await h.platform.engine.sessions.flush()

    assert await h.platform.core.tls_reports.send() == 0  # the day is not over yet
    h.clock.advance(DAY)
    assert await h.platform.core.tls_reports.send() == 3
    assert await h.platform.core.tls_reports.send() == 0  # each report is sent once
    outcomes = {r.policy_domain: r.outcome for r in await h.platform.core.db.run(store.sent_reports)}
    assert outcomes["mxmismatch.test"].endswith("/v1/tlsrpt: HTTP 200")
    assert outcomes["secure.test"].startswith("mailto:tlsrpt@reports.test: queued as message ")
    await _until(lambda: len(h.world.received("reports.test")) == 2)  # mailed: secure, ststesting
    for mailed in h.world.received("reports.test"):
        head = mailed.data.split(b"\r\n\r\n", 1)[0]
        assert b'multipart/report; report-type="tlsrpt"' in head and b"TLS-Report-Submitter: " in head
        assert b"DKIM-Signature: " in head and mailed.rcpt_to == ["tlsrpt@reports.test"]

    reports = {r["policies"][0]["policy_domain"]: r for r in h.world.tls_reports()}
    assert set(reports) == {"secure.test", "ststesting.test", "mxmismatch.test"}
    for report in reports.values():
        assert report["organization_name"] == "Estafeta"
        assert report["begin_date"].endswith("T00:00:00Z") and report["end_date"].endswith("T23:59:59Z")
    secure = reports["secure.test"]["policies"][0]
    assert secure["policy_type"] == "sts" and secure["policy_strings"][:2] == [
        "version: STSv1",
        "mode: enforce",
    ]
    assert secure["successful_session_count"] == 1 and secure["failed_session_count"] == 0
    testing_policy = reports["ststesting.test"]["policies"][0]
    assert testing_policy["successful_session_count"] == 0 and testing_policy["failed_session_count"] == 1
    (failure,) = testing_policy["failure_details"]
    assert failure["result_type"] == "certificate-not-trusted"
    assert failure["receiving_mx_hostname"] == "mx.ststesting.test"
    assert failure["receiving_ip"] == "127.0.0.43" and failure["sending_mta_ip"] == "127.0.0.1"
    mismatch = reports["mxmismatch.test"]["policies"][0]
    assert mismatch["failed_session_count"] >= 1
    assert {d["result_type"] for d in mismatch["failure_details"]} == {"validation-failure"}


async def _until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
