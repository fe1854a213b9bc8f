"""Streams: separate From domains and IP pools for transactional and broadcast mail, and the accept-time
linter in its two modes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from estafeta.world import World
from tests.e2e.harness import Harness, start_harness

POOLS = {"bulk": ["127.0.0.2", "127.0.0.3"], "receipts": ["127.0.0.4"]}  # the world's sending addresses
LIST_HEADERS = {
    "List-Unsubscribe": "<https://acme.test/u/1>, <mailto:unsub@acme.test>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}
UNSUBSCRIBE_LINK = '<p>News.</p><p><a href="https://acme.test/u/1">Unsubscribe</a></p>'


async def _harness(world: World, tmp_path: Path, **overrides: object) -> Harness:
    return await start_harness(world, f"sqlite:///{tmp_path / 'streams.db'}", **overrides)


@pytest.fixture
async def pooled(fresh_world: World, tmp_path: Path) -> AsyncIterator[Harness]:
    h = await _harness(fresh_world, tmp_path, ip_pools=POOLS)
    yield h
    await h.client.aclose()
    await h.platform.stop(grace=2)


@pytest.fixture
async def blocking(fresh_world: World, tmp_path: Path) -> AsyncIterator[Harness]:
    h = await _harness(fresh_world, tmp_path, lint={"mode": "block"})
    yield h
    await h.client.aclose()
    await h.platform.stop(grace=2)


async def _post(h: Harness, **message: object) -> dict[str, Any]:
    body = {"from": "Acme <hello@acme.test>", "subject": "Hello", "text": "Hello there.\n", **message}
    response = await h.client.post("/v1/messages", json=body)
    return {"status": response.status_code, **response.json()}


async def test_each_stream_leaves_from_its_own_ip_pool(pooled: Harness) -> None:
    h = pooled
    for stream, domain, pool in (
        ("transactional", "acme.test", "receipts"),
        ("broadcast", "ed.acme.test", "bulk"),
    ):
        response = await h.client.put(f"/v1/streams/{stream}", json={"from_domain": domain, "ip_pool": pool})
        assert response.status_code == 200, response.text
    receipts = [await h.send(to=[f"buyer{i}@gmail.test"], subject="Receipt") for i in range(2)]
    news = [
        await h.send(
            **{"from": "News <news@ed.acme.test>"}, to=[f"reader{i}@gmail.test"], stream="broadcast",
            headers=LIST_HEADERS, html=UNSUBSCRIBE_LINK,
        )
        for i in range(4)
    ]  # fmt: skip
    for message_id in receipts + news:
        await h.wait_state(message_id, "delivered")
    peers = {tuple(r.rcpt_to): r.peer for r in h.world.received("gmail.test")}
    assert {peers[(f"buyer{i}@gmail.test",)] for i in range(2)} == {"127.0.0.4"}
    assert {peers[(f"reader{i}@gmail.test",)] for i in range(4)} == {"127.0.0.2", "127.0.0.3"}
    view = await h.message(news[0])
    (delivered,) = [e for e in view["events"] if e["type"] == "delivered"]
    assert delivered["data"]["source_ip"] in POOLS["bulk"]


async def test_streams_need_their_own_from_domain_and_a_known_pool(pooled: Harness) -> None:
    h = pooled
    assert (
        await h.client.put("/v1/streams/broadcast", json={"from_domain": "ed.acme.test"})
    ).status_code == 200
    clash = await h.client.put("/v1/streams/transactional", json={"from_domain": "ed.acme.test"})
    assert clash.status_code == 409 and "broadcast" in clash.json()["detail"]
    unknown = await h.client.put("/v1/streams/transactional", json={"ip_pool": "nope"})
    assert unknown.status_code == 422 and "bulk" in unknown.json()["detail"]
    foreign = await h.client.put("/v1/streams/transactional", json={"from_domain": "gmail.test"})
    assert foreign.status_code == 422
    listed = (await h.client.get("/v1/streams")).json()["data"]
    assert [(s["stream"], s["from_domain"]) for s in listed] == [
        ("transactional", ""),
        ("broadcast", "ed.acme.test"),
    ]

    # broadcast mail from another domain than its stream's is flagged (warn mode accepts it)
    stray = await _post(
        h, to=["x@yahoo.test"], stream="broadcast", headers=LIST_HEADERS, html=UNSUBSCRIBE_LINK
    )
    assert stray["status"] == 202
    (finding,) = stray["messages"][0]["lint"]
    assert finding["rule"] == "from-per-category" and "ed.acme.test" in finding["message"]


async def test_promotional_content_in_the_transactional_stream_is_flagged(pooled: Harness) -> None:
    accepted = await _post(
        pooled,
        to=["y@yahoo.test"],
        subject="Your order + 20% off",
        text="Use promo code SPRING for free shipping.",
    )
    assert accepted["status"] == 202
    (finding,) = accepted["messages"][0]["lint"]
    assert finding["rule"] == "promotional-transactional" and finding["severity"] == "warning"
    assert "promo code" in finding["message"] and "a percentage off" in finding["message"]
    events = (await pooled.client.get("/v1/events", params={"type": "accepted"})).json()["data"]
    assert events[0]["data"]["lint"] == [finding]


async def test_block_mode_refuses_with_every_finding_listed(blocking: Harness) -> None:
    refused = await _post(
        blocking,
        to=["z@gmail.test"],
        stream="broadcast",
        html='<div><p>Sale! <a href="https://xn--80ak6aa92e.com/login">Log in</a></div></p>',
    )
    assert refused["status"] == 422
    rules = {e["rule"]: e for e in refused["errors"]}
    assert set(rules) == {"list-unsubscribe", "unsubscribe-link", "idn", "html"}
    assert rules["idn"]["field"] == "links" and "confusable" in rules["idn"]["reason"]
    assert rules["html"]["severity"] == "warning"
    assert blocking.world.received() == []

    clean = await _post(
        blocking, to=["z@gmail.test"], stream="broadcast", headers=LIST_HEADERS, html=UNSUBSCRIBE_LINK
    )
    assert clean["status"] == 202 and clean["messages"][0]["lint"] == []
