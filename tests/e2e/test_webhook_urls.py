"""Webhook URLs are stored in the form they are used in, and no URL can wedge an endpoint: an attempt the
HTTP client cannot make is a failed attempt like any other, and fixing the URL gets events flowing again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from estafeta.store import webhooks as webhook_store
from estafeta.world import World
from tests.e2e.harness import Harness, start_harness
from tests.e2e.webhook_receiver import WebhookReceiver


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    running = await WebhookReceiver().start()
    yield running
    await running.stop()


async def _log(h: Harness, endpoint_id: int) -> list[dict]:  # type: ignore[type-arg]
    response = await h.client.get(f"/v1/webhooks/{endpoint_id}/deliveries")
    return list(response.json()["data"])


async def test_urls_are_canonical_when_set(harness: Harness, receiver: WebhookReceiver) -> None:
    port = urlsplit(receiver.url).port
    for written in (f"http://0177.0.0.1:{port}/hooks", f"http://\u2460\u2461\u2466.0.0.1:{port}/hooks"):
        created = await harness.client.post("/v1/webhooks", json={"url": written})
        assert created.status_code == 201, created.text
        assert created.json()["url"] == receiver.url
        test = await harness.client.post(f"/v1/webhooks/{created.json()['id']}/test")
        assert test.status_code == 202
    await receiver.wait_for(lambda requests: len(requests) == 2)
    for bad in (
        "http://256.0.0.1/",
        "http://0x7g.0.0.1/",
        "http://1.2.3.4.5/",
        "http://a..b/",
        "gopher://x/",
    ):
        refused = await harness.client.post("/v1/webhooks", json={"url": bad})
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "url", bad


async def test_private_addresses_in_any_spelling_are_refused(fresh_world: World, tmp_path: Path) -> None:
    h = await start_harness(
        fresh_world, f"sqlite:///{tmp_path / 'e2e.db'}", webhooks={"allow_private_addresses": False}
    )
    try:
        for url in (
            "http://0177.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://\u2460\u2461\u2466.0.0.1/",
            "http://[::127.0.0.1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[64:ff9b::10.0.0.1]/",  # NAT64
            "http://[2002:a9fe:a9fe::1]/",  # 6to4 of 169.254.169.254
        ):
            refused = await h.client.post("/v1/webhooks", json={"url": url})
            assert refused.status_code == 422, (url, refused.text)
            assert "public internet" in refused.json()["detail"]
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)


async def test_an_unusable_url_never_wedges_its_endpoint(harness: Harness, receiver: WebhookReceiver) -> None:
    h = harness
    endpoint = (await h.client.post("/v1/webhooks", json={"url": receiver.url})).json()
    # A URL stored before URLs were checked, which the HTTP client refuses to parse.
    port = urlsplit(receiver.url).port
    h.platform.core.db.call(
        webhook_store.update_endpoint,
        None,
        endpoint["id"],
        {"url": f"http://0177.0.0.1:{port}/x"},
        h.clock.now(),
    )
    concurrency = h.platform.settings.webhooks.endpoint_concurrency
    for _ in range(concurrency + 2):  # more than the endpoint's slots
        assert (await h.client.post(f"/v1/webhooks/{endpoint['id']}/test")).status_code == 202

    async def all_attempted() -> bool:
        log = await _log(h, endpoint["id"])
        return len(log) == concurrency + 2 and all(d["attempts"] == 1 for d in log)

    await _eventually(all_attempted)
    for delivery in await _log(h, endpoint["id"]):
        assert delivery["state"] == "pending" and "InvalidURL" in delivery["last_error"]
    fixed = await h.client.patch(f"/v1/webhooks/{endpoint['id']}", json={"url": receiver.url})
    assert fixed.status_code == 200
    h.advance(60)  # the failed ones are due again
    h.platform.core.webhook_dispatcher.wakeup.set()
    await receiver.wait_for(lambda requests: len(requests) == concurrency + 2)

    async def all_delivered() -> bool:
        return all(d["state"] == "delivered" for d in await _log(h, endpoint["id"]))

    await _eventually(all_delivered)


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.05)
