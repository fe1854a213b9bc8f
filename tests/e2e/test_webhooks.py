"""Webhooks end to end: a receiver on loopback checks signatures, sees every event type, retries, order,
the delivery log, replays (API and CLI), and that a dead endpoint never holds up mail."""

from __future__ import annotations

import asyncio
import email
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from email import policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from estafeta.cli import app as cli
from estafeta.clock import SystemClock
from estafeta.world import World
from tests.e2e.harness import Harness, start_harness
from tests.e2e.webhook_receiver import Request, WebhookReceiver
from tests.factories import add_event

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    running = await WebhookReceiver().start()
    yield running
    await running.stop()


async def _endpoint(harness: Harness, url: str, **fields: object) -> dict:  # type: ignore[type-arg]
    response = await harness.client.post("/v1/webhooks", json={"url": url, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _types(requests: list[Request]) -> list[str]:
    return [r.payload["type"] for r in requests]


async def _log(harness: Harness, endpoint_id: int, **params: object) -> list[dict]:  # type: ignore[type-arg]
    response = await harness.client.get(f"/v1/webhooks/{endpoint_id}/deliveries", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def test_every_event_type_arrives_signed(harness: Harness, receiver: WebhookReceiver) -> None:
    endpoint = await _endpoint(harness, receiver.url, description="all of it")
    assert endpoint["secret"].startswith("whsec_") and endpoint["event_types"] == []
    delivered = await harness.send(
        to=["ana@outlook.test"],
        html='<p><a href="https://acme.test/offer">offer</a></p>',
        tags=["welcome"],
        metadata={"customer": "42"},
        tracking={"clicks": True},
    )
    bounced = await harness.send(to=["nobody@bounce.test"])
    deferred = await harness.send(to=["busy@full.test"])
    await harness.wait_state(delivered, "delivered")
    await harness.wait_state(bounced, "bounced")
    await harness.wait_state(deferred, "deferred")
    html = email.message_from_bytes(harness.world.received("outlook.test")[-1].data, policy=policy.default)
    body = html.get_body(("html",))
    assert body is not None
    content = str(body.get_content())
    harness.advance(60)
    async with httpx.AsyncClient(base_url=harness.platform.api_url) as recipient:
        for path in re.findall(r'"http://127\.0\.0\.1:\d+(/t/[oc]/[^"]+)"', content):
            await recipient.get(path, headers={"User-Agent": BROWSER})
    # Events from the rest of the platform (feedback loops, unsubscribes, the policy gate, reputation) are
    # rows of the same log; they flow without webhook code knowing about them.
    for kind, data in (
        ("complained", {"feedback_type": "abuse"}),
        ("unsubscribed", {"method": "one-click"}),
        ("suppressed", {"reason": "hard-bounce", "scope": "account"}),
        ("account_paused", {"reason": "complaint rate above 0.3%"}),
        ("account_resumed", {}),
    ):
        recipient_address = None if kind.startswith("account") else "ana@outlook.test"
        await harness.platform.core.db.run(
            add_event,
            account_id=harness.account_id,
            type=kind,
            now=harness.clock.now(),
            message_id=None if recipient_address is None else delivered,
            recipient=recipient_address,
            data=data,
        )
    expected = {
        "accepted", "queued", "delivered", "bounced", "deferred", "opened", "clicked",
        "complained", "unsubscribed", "suppressed", "account_paused", "account_resumed",
    }  # fmt: skip
    requests = await receiver.wait_for(lambda seen: expected <= set(_types(seen)))
    payloads = [
        r.verify(endpoint["secret"]) for r in requests
    ]  # every one is signed with the endpoint's secret
    assert len({r.headers["webhook-id"] for r in requests}) == len(requests)
    assert all(r.headers["content-type"] == "application/json" for r in requests)
    by_type = {p["type"]: p for p in payloads}
    bounce = by_type["bounced"]
    assert bounce["message_id"] == bounced and bounce["recipient"] == "nobody@bounce.test"
    assert bounce["data"]["bounce"]["kind"] == "hard" and bounce["data"]["bounce"]["reason"]
    assert "5.1.1" in bounce["data"]["reply"]
    assert by_type["delivered"]["message"] == {
        "stream": "transactional",
        "tags": ["welcome"],
        "metadata": {"customer": "42"},
    }
    assert by_type["clicked"]["data"]["url"] == "https://acme.test/offer"
    assert by_type["account_paused"]["message"] is None
    assert by_type["account_paused"]["data"] == {"reason": "complaint rate above 0.3%"}
    assert by_type["deferred"]["data"]["code"] == 452
    # each message's events came in the order they happened
    for message_id in (delivered, bounced, deferred):
        ids = [int(p["id"].removeprefix("evt_")) for p in payloads if p["message_id"] == message_id]
        assert ids == sorted(ids)
    with pytest.raises(Exception, match="signature"):
        requests[0].verify("whsec_" + "A" * 32)


async def _recorded_attempts(
    harness: Harness, endpoint_id: int, attempts: int
) -> tuple[list[dict], dict | None]:  # type: ignore[type-arg]
    """The pending deliveries once the message's first event shows `attempts` recorded attempts: the
    receiver answers before the platform records the answer (and sets the next attempt's time)."""
    deadline = time.monotonic() + 15
    while True:
        waiting = await _log(harness, endpoint_id, state="pending")
        first = next((d for d in waiting if d["event_type"] == "accepted"), None)
        if (first is not None and first["attempts"] == attempts) or time.monotonic() > deadline:
            return waiting, first
        await asyncio.sleep(0.02)


async def test_failed_posts_are_retried_with_back_off_and_order_is_kept(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    endpoint = await _endpoint(harness, receiver.url, event_types=["accepted", "queued", "delivered"])
    receiver.statuses.extend([500, 503])
    message_id = await harness.send(to=["ana@outlook.test"])
    await harness.wait_state(message_id, "delivered")
    await receiver.wait_for(lambda seen: len(seen) == 1)
    waiting, first = await _recorded_attempts(harness, endpoint["id"], 1)
    assert first is not None
    assert [d["attempts"] for d in waiting if d is not first] == [0, 0]  # the message's later events wait
    assert first["event_type"] == "accepted" and first["attempts"] == 1 and first["last_status"] == 500
    assert first["response_snippet"] == "upstream trouble" and first["last_error"] == "HTTP 500"
    assert first["next_attempt_at"] == "2026-01-01T00:00:05Z"
    harness.advance(5)  # the first retry is due after 5 s
    await receiver.wait_for(lambda seen: len(seen) == 2)
    _, second = await _recorded_attempts(harness, endpoint["id"], 2)  # its retry time is set from then
    assert second is not None and second["next_attempt_at"] == "2026-01-01T00:00:35Z"
    harness.advance(30)  # then after 30 s more; this one succeeds, and the message's later events follow
    requests = await receiver.wait_for(lambda seen: len(seen) == 5)
    assert _types(requests) == ["accepted", "accepted", "accepted", "queued", "delivered"]
    assert len({r.headers["webhook-id"] for r in requests[:3]}) == 1  # a retry is the same delivery
    log = await _log(harness, endpoint["id"])
    assert [(d["event_type"], d["state"], d["attempts"]) for d in log] == [
        ("delivered", "delivered", 1),
        ("queued", "delivered", 1),
        ("accepted", "delivered", 3),
    ]
    assert all(d["last_status"] == 200 for d in log)


async def _delivery_when(
    harness: Harness, path: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0
) -> dict[str, Any]:
    """Poll one delivery until `predicate` holds (real time bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        found = (await harness.client.get(path)).json()
        if predicate(found):
            return dict(found)
        if time.monotonic() > deadline:
            raise AssertionError(f"delivery never got there: {found}")
        await asyncio.sleep(0.02)


async def test_a_dead_endpoint_fails_after_24_hours_and_can_be_replayed(
    harness: Harness, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = await _endpoint(harness, receiver.url)
    receiver.statuses.extend([500] * 100)
    test = await harness.client.post(f"/v1/webhooks/{endpoint['id']}/test")
    assert test.status_code == 202 and test.json()["event_type"] == "webhook.test"
    delivery = test.json()["id"]
    path = f"/v1/webhooks/{endpoint['id']}/deliveries/{delivery}"
    attempts = 0
    while True:
        attempts += 1
        found = await _delivery_when(harness, path, lambda d, n=attempts: d["attempts"] == n)
        if found["state"] != "pending":
            break
        harness.advance(
            (datetime.fromisoformat(found["next_attempt_at"]) - harness.clock.now()).total_seconds()
        )
    # 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h, 8 h, then the rest of the 24 hours
    assert found["state"] == "failed" and attempts == 12 and len(receiver.requests) == attempts
    assert found["last_status"] == 500 and found["payload"]["type"] == "webhook.test"
    first, last = (
        datetime.fromisoformat(found["created_at"]),
        datetime.fromisoformat(found["last_attempt_at"]),
    )
    assert (last - first).total_seconds() >= 24 * 3600  # retried for a whole day before giving up

    receiver.statuses.clear()
    replayed = await harness.client.post(f"{path}/replay")
    assert replayed.status_code == 202 and replayed.json()["state"] == "pending"
    await _delivery_when(harness, path, lambda d: d["state"] == "delivered")
    assert receiver.requests[-1].headers["webhook-id"] == receiver.requests[0].headers["webhook-id"]
    assert (
        await harness.client.post(f"/v1/webhooks/{endpoint['id']}/deliveries/999999/replay")
    ).status_code == 404

    # The CLI reads the same database: its log shows the delivery, its replay sends it once more.
    monkeypatch.setenv("ESTAFETA_DATABASE_URL", harness.platform.settings.database_url)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    listed = runner.invoke(cli, ["webhooks", "list"])
    assert listed.exit_code == 0 and receiver.url in listed.stdout
    log = runner.invoke(cli, ["webhooks", "log", str(endpoint["id"])])
    assert log.exit_code == 0 and "webhook.test" in log.stdout and "delivered" in log.stdout
    again = runner.invoke(cli, ["webhooks", "replay", str(endpoint["id"]), str(delivery)])
    assert again.exit_code == 0 and "1 deliveries queued again" in again.stdout
    harness.advance((SystemClock().now() - harness.clock.now()).total_seconds())  # the CLI's "now"
    await receiver.wait_for(lambda seen: len(seen) == attempts + 2)
    assert runner.invoke(cli, ["webhooks", "replay", str(endpoint["id"]), "999999"]).exit_code == 1


async def test_a_hanging_endpoint_never_holds_up_mail(fresh_world: World, tmp_path: Path) -> None:
    h = await start_harness(fresh_world, f"sqlite:///{tmp_path / 'e2e.db'}", webhooks={"timeout": 120})
    receiver = await WebhookReceiver().start()
    receiver.hang = True
    try:
        await _endpoint(h, receiver.url)
        response = await h.client.post(
            "/v1/messages",
            json={
                "messages": [
                    {"from": "hello@acme.test", "to": [f"u{i}@yahoo.test"], "text": "t"} for i in range(20)
                ]
            },
        )
        assert response.status_code == 202
        await receiver.wait_for(lambda seen: receiver.waiting > 0)
        for message in response.json()["messages"]:
            await h.wait_state(message["id"], "delivered")
        # Every message was delivered while the endpoint still sat on its first requests, unanswered.
        assert receiver.waiting == len(receiver.requests) == h.platform.settings.webhooks.endpoint_concurrency
        assert fresh_world.stats()["yahoo.test"].accepted == 20
        receiver.release()
        await receiver.wait_for(lambda seen: len(seen) >= 40 + 20)  # accepted + queued + delivered each
    finally:
        receiver.release()
        await h.client.aclose()
        await h.platform.stop(grace=2)
        await receiver.stop()


async def test_endpoints_filter_by_type_are_managed_and_validated(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    endpoint = await _endpoint(harness, receiver.url, event_types=["delivered"], description="deliveries")
    message_id = await harness.send(to=["ana@outlook.test"])
    await harness.wait_state(message_id, "delivered")
    assert (await harness.client.post(f"/v1/webhooks/{endpoint['id']}/test")).status_code == 202
    requests = await receiver.wait_for(lambda seen: len(seen) == 2)
    assert sorted(_types(requests)) == ["delivered", "webhook.test"]

    listed = (await harness.client.get("/v1/webhooks")).json()["data"]
    assert [e["id"] for e in listed] == [endpoint["id"]]
    rotated = await harness.client.patch(
        f"/v1/webhooks/{endpoint['id']}", json={"rotate_secret": True, "event_types": ["*"], "enabled": False}
    )
    assert rotated.status_code == 200
    assert rotated.json()["secret"] != endpoint["secret"] and rotated.json()["enabled"] is False
    assert rotated.json()["event_types"] == ["*"]
    for bad in (
        {"url": "ftp://example.test/"},
        {"url": "not a url"},
        {"url": receiver.url, "event_types": ["Bad Type"]},
    ):
        invalid = await harness.client.post("/v1/webhooks", json=bad)
        assert invalid.status_code == 422 and invalid.headers["content-type"] == "application/problem+json"
    assert (await harness.client.delete(f"/v1/webhooks/{endpoint['id']}")).status_code == 204
    assert (await harness.client.get(f"/v1/webhooks/{endpoint['id']}")).status_code == 404
    assert (await harness.client.get(f"/v1/webhooks/{endpoint['id']}/deliveries")).status_code == 404


async def test_endpoints_in_private_networks_are_refused_unless_allowed(
    fresh_world: World, tmp_path: Path
) -> None:
    h = await start_harness(
        fresh_world, f"sqlite:///{tmp_path / 'e2e.db'}", webhooks={"allow_private_addresses": False}
    )
    try:
        for url in ("http://169.254.169.254/latest/meta-data", "http://localhost:5432/", "http://[::1]/x"):
            refused = await h.client.post("/v1/webhooks", json={"url": url})
            assert refused.status_code == 422, refused.text
            assert refused.json()["errors"][0]["field"] == "url"
            assert "public internet" in refused.json()["detail"]
        # A name is judged when the platform connects; disabled here, so nothing is ever sent to it.
        public = await _endpoint(h, "https://hooks.example.com/estafeta", enabled=False)
        moved = await h.client.patch(f"/v1/webhooks/{public['id']}", json={"url": "http://10.0.0.8/hooks"})
        assert moved.status_code == 422
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)
