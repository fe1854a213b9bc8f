"""Reputation governance end to end: a bad list pauses broadcast sending, an administrator's approval
resumes it, warm-up limits climb through every tier, and suspicious links hold a message for review."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest

from estafeta.accept import AcceptError
from estafeta.audit import SYSTEM
from estafeta.store import queue as queue_store
from estafeta.store import reputation as reputation_store
from estafeta.world import World
from tests.e2e.harness import Harness, start_harness
from tests.e2e.webhook_receiver import WebhookReceiver

LIST_SIZE = 300


def _bad(i: int) -> bool:
    """30 of the 300 addresses (10%) do not exist: 24 of the first 40, then one in 40, so that any 41 or
    more consecutive outcomes of the rest stay under the 5% pause threshold, wherever the pause fell."""
    return i % 5 < 3 if i < 40 else (i - 40) % 40 == 20


ANSWERS = {
    "collection": "sign-up form on our shop",
    "consent": "double opt-in",
    "content": "weekly offers",
    "frequency": "once a week",
}


async def _start(world: World, tmp_path: Path, **overrides: Any) -> Harness:
    return await start_harness(world, f"sqlite:///{tmp_path / 'e2e.db'}", **overrides)


@pytest.fixture
async def governed(fresh_world: World, tmp_path: Path) -> AsyncIterator[Harness]:
    """A platform that claims few entries at a time, so a pause can land while most of a list waits."""
    h = await _start(
        fresh_world,
        tmp_path,
        delivery={"batch_size": 5, "max_in_flight": 5},
        reputation={"min_volume": 40},
    )
    yield h
    await h.client.aclose()
    await h.platform.stop(grace=2)


async def _admin(h: Harness) -> httpx.AsyncClient:
    key = (await h.platform.core.admin_keys.create("ops", actor=SYSTEM)).token
    return httpx.AsyncClient(base_url=h.platform.api_url, headers={"Authorization": f"Bearer {key}"})


async def _events(h: Harness, *types: str) -> list[dict[str, Any]]:
    response = await h.client.get("/v1/events", params={"type": list(types), "limit": 1000})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def _until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.05)


async def _states(h: Harness) -> dict[str, int]:
    return await h.platform.core.db.run(queue_store.state_counts, h.account_id)


async def _engine_idle(h: Harness) -> None:
    async def idle() -> bool:
        return not h.platform.engine.in_flight  # an entry leaves it once its outcome is committed

    await _until(idle)


async def _send_list(h: Harness) -> list[str]:
    """The bad list: 10% of it is unknown at bounce.test, the rest are real yahoo.test users."""
    messages = [
        {
            "from": "Acme <news@acme.test>",
            "to": [f"gone{i}@bounce.test" if _bad(i) else f"reader{i}@yahoo.test"],
            "subject": "Our weekly offers",
            "text": "Offers.\n",
            "stream": "broadcast",
        }
        for i in range(LIST_SIZE)
    ]
    response = await h.client.post("/v1/messages", json={"messages": messages})
    assert response.status_code == 202, response.text
    return [m["id"] for m in response.json()["messages"]]


async def _paused(h: Harness) -> None:
    await _send_list(h)

    async def paused() -> bool:
        return bool(await _events(h, "account_paused"))

    await _until(paused)
    await _engine_idle(h)


async def test_a_list_with_ten_percent_bad_addresses_pauses_broadcast(governed: Harness) -> None:
    h = governed
    await _paused(h)
    (event,) = await _events(h, "account_paused")
    assert event["data"]["stream"] == "broadcast"
    assert event["data"]["metrics"]["bounce_rate"] > 0.05
    assert "review-answers" in event["data"]["how_to_resume"]
    assert await _events(h, "review_requested")

    # Most of the list waits in the queue, and the queue does not hand it out.
    states = await _states(h)
    assert states.get("queued", 0) > LIST_SIZE // 2
    claimed = await h.platform.core.db.run(
        queue_store.claim, "probe", h.clock.now(), h.clock.now(), LIST_SIZE
    )
    assert claimed == []

    # New broadcast mail is refused with the reason and the way back; transactional mail still flows.
    refused = await h.client.post(
        "/v1/messages",
        json={
            "from": "news@acme.test",
            "to": ["x@yahoo.test"],
            "subject": "More",
            "text": "x",
            "stream": "broadcast",
        },
    )
    assert refused.status_code == 403
    problem = refused.json()
    assert problem["type"] == "/problems/account-paused"
    assert "paused" in problem["detail"] and "review-answers" in problem["detail"]
    receipt = await h.send(to=["buyer@yahoo.test"], subject="Your receipt")
    await h.wait_state(receipt, "delivered")

    # The SMTP relay answers a temporary refusal while the account waits for review.
    with pytest.raises(AcceptError) as raised:
        await h.platform.core.accepter.accept_raw(
            h.account_id,
            "news@acme.test",
            ["y@yahoo.test"],
            b"From: news@acme.test\r\nTo: y@yahoo.test\r\nSubject: hi\r\n\r\nhi\r\n",
            stream="broadcast",
        )
    assert raised.value.smtp == "451 4.7.1"

    standing = (await h.client.get("/v1/account/reputation")).json()
    assert standing["streams"]["broadcast"]["state"] == "paused"
    assert standing["streams"]["transactional"]["state"] == "active"
    assert standing["metrics"]["hard_bounced"] >= 1 and standing["review"]["state"] == "open"


async def test_approval_resumes_and_the_waiting_mail_is_delivered(governed: Harness) -> None:
    h = governed
    await _paused(h)
    answered = await h.client.post("/v1/account/review-answers", json=ANSWERS)
    assert answered.status_code == 200, answered.text
    async with await _admin(h) as admin:
        (review,) = (await admin.get("/v1/admin/reviews")).json()["data"]
        detail = (await admin.get(f"/v1/admin/reviews/{review['id']}")).json()
        assert detail["answers"] == ANSWERS
        assert detail["metrics"]["bounce_rate"] > 0.05
        assert any(f["type"] == "bounced" for f in detail["recent_failures"])
        assert detail["sample_messages"][0]["subject"] == "Our weekly offers"
        assert (await h.client.get("/v1/admin/reviews")).status_code == 403  # an account key
        approved = await admin.post(
            f"/v1/admin/reviews/{review['id']}/approve", json={"note": "list cleaned"}
        )
        assert approved.status_code == 200, approved.text
        again = await admin.post(f"/v1/admin/reviews/{review['id']}/approve")
        assert again.status_code == 409
        trail = (await admin.get(f"/v1/admin/reviews/{review['id']}")).json()["audit"]
    assert [a["action"] for a in trail] == ["opened", "answered", "approved"]
    assert trail[-1]["actor"].startswith("admin:") and trail[-1]["note"] == "list cleaned"
    assert await _events(h, "account_resumed")

    async def drained() -> bool:
        states = await _states(h)
        return not states.get("queued") and not states.get("deferred")

    await _until(drained, timeout=60)
    states = await _states(h)
    assert sum(map(_bad, range(LIST_SIZE))) == LIST_SIZE // 10
    # Nothing was lost, and the rest of the list (under 5% bad) did not pause the account again.
    assert states["delivered"] + states["bounced"] == LIST_SIZE
    assert len(await _events(h, "account_paused")) == 1
    more = await h.send(to=["again@yahoo.test"], stream="broadcast")
    await h.wait_state(more, "delivered")


async def test_rejection_suspends_and_waiting_mail_can_be_cancelled(governed: Harness) -> None:
    h = governed
    await _paused(h)
    async with await _admin(h) as admin:
        (review,) = (await admin.get("/v1/admin/reviews")).json()["data"]
        rejected = await admin.post(f"/v1/admin/reviews/{review['id']}/reject", json={"note": "bought list"})
        assert rejected.status_code == 200, rejected.text
    assert await _events(h, "account_suspended")
    waiting = (await _states(h))["queued"]
    cancelled = await h.client.post("/v1/messages/cancel", json={"stream": "broadcast"})
    assert cancelled.json() == {"cancelled": waiting}
    assert len(await _events(h, "cancelled")) == waiting
    with pytest.raises(AcceptError) as raised:
        await h.platform.core.accepter.accept_raw(
            h.account_id,
            "news@acme.test",
            ["y@yahoo.test"],
            b"From: news@acme.test\r\nTo: y@yahoo.test\r\nSubject: hi\r\n\r\nhi\r\n",
            stream="broadcast",
        )
    assert raised.value.smtp == "550 5.7.1"


async def test_an_administrator_can_pause_transactional_mail_too(harness: Harness) -> None:
    h = harness
    async with await _admin(h) as admin:
        paused = await admin.post(
            f"/v1/admin/accounts/{h.account_id}/streams",
            json={"stream": "transactional", "state": "paused", "reason": "phishing report"},
        )
        assert paused.status_code == 200, paused.text
        refused = await h.client.post(
            "/v1/messages",
            json={"from": "hello@acme.test", "to": ["a@yahoo.test"], "subject": "s", "text": "t"},
        )
        assert refused.status_code == 403 and "phishing report" in refused.json()["detail"]
        await admin.post(
            f"/v1/admin/accounts/{h.account_id}/streams", json={"stream": "transactional", "state": "active"}
        )
    sent = await h.send(to=["a@yahoo.test"])
    await h.wait_state(sent, "delivered")


# -- warm-up -----------------------------------------------------------------------------------------


async def _queue(h: Harness, count: int, start: int) -> httpx.Response:
    messages = [
        {"from": "hello@acme.test", "to": [f"u{start + i}@yahoo.test"], "subject": "s", "text": "t"}
        for i in range(count)
    ]
    return await h.client.post("/v1/messages", json={"messages": messages})


async def test_warm_up_climbs_through_every_tier(fresh_world: World, tmp_path: Path) -> None:
    tiers = [10, 20, 40, 80]
    h = await _start(fresh_world, tmp_path, warmup={"tiers": tiers})
    try:
        sent = 0
        for tier, limit in enumerate(tiers):
            over = await _queue(h, limit - sent + 1, sent)
            assert over.status_code == 429
            assert over.json()["type"] == "/problems/sending-limit"
            assert f"{limit} recipients per 24 hours" in over.json()["detail"]
            below = int(limit * 0.8) - sent - 1
            assert (await _queue(h, below, sent)).status_code == 202
            sent += below
            assert await h.platform.core.reputation.warmup_reviews() == 0  # under 80%: no review yet
            assert (await _queue(h, 1, sent)).status_code == 202
            sent += 1
            h.clock.advance(60)  # the scheduler's next round
            assert await h.platform.core.reputation.warmup_reviews() == 1
            raised = await _events(h, "limit_raised")
            assert raised[-1]["data"]["tier"] == tier + 1
        standing = (await h.client.get("/v1/account/reputation")).json()
        assert standing["limit"]["per_24h"] is None  # unlimited after the last tier
        assert (await _queue(h, 200, sent)).status_code == 202
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)


async def test_warm_up_with_unhealthy_rates_waits_for_an_administrator(
    fresh_world: World, tmp_path: Path
) -> None:
    h = await _start(fresh_world, tmp_path, warmup={"tiers": [10]}, reputation={"min_volume": 5})
    try:
        response = await h.client.post(
            "/v1/messages",
            json={
                "messages": [
                    {"from": "hello@acme.test", "to": [f"gone{i}@bounce.test"], "subject": "s", "text": "t"}
                    for i in range(8)
                ]
            },
        )
        assert response.status_code == 202
        for message in response.json()["messages"]:
            await h.wait_state(message["id"], "bounced")
        assert await h.platform.core.reputation.warmup_reviews() == 0
        assert not await _events(h, "limit_raised")
        (requested,) = await _events(h, "review_requested")
        assert requested["data"]["reason"].startswith("warm-up")
        async with await _admin(h) as admin:
            review_id = requested["data"]["review_id"]
            assert (await admin.post(f"/v1/admin/reviews/{review_id}/approve")).status_code == 200
        assert (await _events(h, "limit_raised"))[0]["data"]["by"].startswith("admin:")
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)


# -- link checks -------------------------------------------------------------------------------------


async def test_a_shortened_link_holds_the_message_for_review(harness: Harness) -> None:
    h = harness
    h.world.web.redirect("http://short.test/abc", "http://landing.acme.test/offer")
    response = await h.client.post(
        "/v1/messages",
        json={
            "from": "hello@acme.test",
            "to": ["reader@yahoo.test"],
            "subject": "Offer",
            "html": '<p>See <a href="http://short.test/abc">our offer</a></p>',
        },
    )
    assert response.status_code == 202, response.text
    (accepted,) = response.json()["messages"]
    assert accepted["recipients"][0]["state"] == "held"
    view = await h.message(accepted["id"])
    assert view["state"] == "held"
    assert "short.test" in view["recipients"][0]["reason"]
    (requested,) = await _events(h, "review_requested")
    assert "held" in requested["data"]["reason"]
    await _engine_idle(h)
    assert not h.world.received("yahoo.test")  # held mail is not sent
    async with await _admin(h) as admin:
        approved = await admin.post(f"/v1/admin/reviews/{requested['data']['review_id']}/approve")
        assert approved.json()["messages_moved"] == 1
    await h.wait_state(accepted["id"], "delivered")


async def test_long_redirect_chains_and_blocklisted_domains_hold(fresh_world: World, tmp_path: Path) -> None:
    web = fresh_world.web
    for hop in range(1, 5):
        web.redirect(f"http://hops.test/{hop}", f"http://hops.test/{hop + 1}")
    web.redirect("http://ok.test/a", "http://ok.test/b")
    web.redirect("http://innocent.test/go", "http://evil.test/landing")
    h = await _start(fresh_world, tmp_path, links={"max_redirects": 3, "blocklist": ["evil.test"]})
    try:

        async def state_of(url: str) -> dict[str, Any]:
            response = await h.client.post(
                "/v1/messages",
                json={
                    "from": "hello@acme.test",
                    "to": ["r@yahoo.test"],
                    "subject": "s",
                    "text": f"Go {url} now.",
                },
            )
            assert response.status_code == 202, response.text
            return dict(response.json()["messages"][0]["recipients"][0])

        assert (await state_of("http://ok.test/a"))["state"] == "queued"
        assert (await state_of("http://hops.test/1"))["state"] == "held"
        assert (await state_of("http://innocent.test/go"))["state"] == "held"
        held = await _events(h, "held")
        reasons = [r for e in held for r in e["data"]["reasons"]]
        assert any("more than 3 times" in r for r in reasons)
        assert any("blocklisted domain evil.test" in r for r in reasons)
        assert ("HEAD", "http://hops.test/1") in web.requests()
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)


# -- notices -----------------------------------------------------------------------------------------


async def test_the_sender_is_told_by_webhook_and_email_when_paused(harness: Harness) -> None:
    h = harness
    await h.platform.core.db.run(reputation_store.set_contact, h.account_id, "owner@outlook.test")
    receiver = await WebhookReceiver().start()
    hook = await h.client.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["account_paused"]})
    assert hook.status_code == 201, hook.text
    async with await _admin(h) as admin:
        await admin.post(
            f"/v1/admin/accounts/{h.account_id}/streams",
            json={"stream": "broadcast", "state": "paused", "reason": "complaints from a partner"},
        )
    assert await h.platform.core.notices.send() == 2  # account_paused and review_requested
    assert await h.platform.core.notices.send() == 0  # each notice once

    async def arrived() -> bool:
        return len(h.world.received("outlook.test")) == 2

    await _until(arrived)
    notices = [message_from_bytes(r.data) for r in h.world.received("outlook.test")]
    assert {n["Subject"] for n in notices} == {
        "[Estafeta] Your broadcast sending is paused",
        "[Estafeta] Your account is under review",
    }
    assert all(n["From"] == "notices@notices.estafeta.test" for n in notices)
    paused = next(n for n in notices if "paused" in n["Subject"])
    body = paused.get_payload(decode=True).decode()
    assert "complaints from a partner" in body and "review-answers" in body
    (posted,) = await receiver.wait_for(lambda seen: len(seen) == 1)
    await receiver.stop()
    assert posted.payload["data"]["reason"] == "complaints from a partner"
