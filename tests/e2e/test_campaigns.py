"""Campaigns through the simulated internet: one-click unsubscribes at gmail.test, throttling, pause and
resume, scheduling, per-campaign stats, and templates checked before anything is sent."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection

from estafeta.accept import Accepted, Submission
from estafeta.audience.campaigns import fix_recipients, start
from estafeta.audit import SYSTEM
from estafeta.compose import Address, Draft, parse_address
from estafeta.store import campaigns as campaign_store
from estafeta.store.events import EventFilter, list_events
from estafeta.world import World
from tests.e2e.audience_support import (
    campaign,
    contacts,
    create_campaign,
    create_list,
    eventually,
    parsed,
    send_and_finish,
    subscribe,
    to,
)
from tests.e2e.harness import Harness, start_harness

DOMAINS = ("gmail.test", "yahoo.test", "outlook.test")
UNSUBSCRIBERS = 25


def _csv(count: int) -> str:
    rows = ["email,first_name,plan,consent_at"]
    for i in range(count):
        domain = DOMAINS[i % 3]
        local = f"unsub{i:04d}" if domain == "gmail.test" and i < UNSUBSCRIBERS * 3 else f"reader{i:04d}"
        rows.append(f"{local}@{domain},Reader {i},{'pro' if i % 2 else 'free'},2025-03-01T10:00:00Z")
    return "\n".join(rows) + "\n"


@pytest.fixture
async def h(fresh_world: World, tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await start_harness(
        fresh_world,
        f"sqlite:///{tmp_path / 'campaigns.db'}",
        audience={"tick_seconds": 0.05},
        delivery={"domain_limits": {"gmail.test": {"concurrency": 10, "rate": 150}}},
    )
    yield harness
    await harness.client.aclose()
    await harness.platform.stop(grace=2)


async def test_campaign_to_1000_contacts_where_gmail_users_unsubscribe_with_one_click(h: Harness) -> None:
    news = await create_list(h)
    response = await h.client.post(
        f"/v1/lists/{news['id']}/imports",
        params={"consent_source": "newsletter box at checkout", "confirmed": "true"},
        content=_csv(1000),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["added"] == 1000 and report["invalid"] == [] and report["flags"] == []

    first = await create_campaign(h, news["id"], name="March")
    view = await send_and_finish(h, first["id"])
    assert view["stats"]["recipients"] == 1000 and view["stats"]["sent"] == 1000
    assert view["stats"]["delivered"] == 1000

    leavers = {f"unsub{i:04d}@gmail.test" for i in range(0, UNSUBSCRIBERS * 3, 3)}
    assert len(leavers) == UNSUBSCRIBERS

    async def all_posted() -> list[Any] | None:
        done = h.world.unsubscribes()
        return done if len(done) == UNSUBSCRIBERS else None

    posts = await eventually(all_posted, "the one-click POSTs")
    assert {p.recipient for p in posts} == leavers
    assert all(p.method == "one-click" and p.status == 200 and not p.cookies for p in posts)
    gone = await contacts(h, news["id"], "unsubscribed")
    assert {c["email"] for c in gone} == leavers
    assert all(c["unsubscribe_method"] == "one-click" for c in gone)
    assert (await campaign(h, first["id"]))["stats"]["unsubscribed"] == UNSUBSCRIBERS

    # what gmail.test saw: bulk mail with everything one-click unsubscribe needs, grouped by campaign
    sample = parsed(to(h, "reader0075@gmail.test")[0])
    assert sample["Precedence"] == "bulk" and sample["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert (
        "<http://127.0.0.1:" in sample["List-Unsubscribe"] and "<mailto:unsub+" in sample["List-Unsubscribe"]
    )
    assert sample["Feedback-ID"].startswith(f"campaign-{first['id']}:")
    assert sample["Subject"] == "Hello Reader 75"

    second = await create_campaign(h, news["id"], name="April")
    view = await send_and_finish(h, second["id"])
    assert view["stats"]["recipients"] == 1000 - UNSUBSCRIBERS and view["stats"]["delivered"] == 975
    per_recipient = Counter(r for received in h.world.received() for r in received.rcpt_to)
    assert all(per_recipient[address] == 1 for address in leavers)  # never mailed again
    assert per_recipient["reader0075@gmail.test"] == 2
    assert sum(per_recipient.values()) == 2000 - UNSUBSCRIBERS


async def _throttled_campaign(h: Harness, count: int, rate: float) -> dict[str, Any]:
    news = await create_list(h)
    for i in range(count):
        await subscribe(h, news["id"], f"fan{i:02d}@yahoo.test")
    return await create_campaign(h, news["id"], rate=rate)


async def _sent(h: Harness, campaign_id: int) -> int:
    return int((await campaign(h, campaign_id))["stats"]["sent"])


async def test_rate_limits_sending_by_the_platform_clock_and_pause_resume_never_sends_twice(
    h: Harness,
) -> None:
    created = await _throttled_campaign(h, 25, rate=10)
    response = await h.client.post(f"/v1/campaigns/{created['id']}/send")
    assert response.json()["state"] == "sending"
    runner = h.platform.core.audience.runner
    await eventually(lambda: _is(h, created["id"], 10), "the first second's worth")
    assert not await runner.tick()  # the clock has not moved: no more room
    assert await _sent(h, created["id"]) == 10

    paused = await h.client.post(f"/v1/campaigns/{created['id']}/pause")
    assert paused.json()["state"] == "paused"
    h.clock.advance(5)
    assert not await runner.tick()
    assert await _sent(h, created["id"]) == 10

    resumed = await h.client.post(f"/v1/campaigns/{created['id']}/resume")
    assert resumed.json()["state"] == "sending"
    await eventually(lambda: _is(h, created["id"], 20), "a second second's worth (a burst is one second)")
    h.clock.advance(1)
    runner.wake()
    view = await eventually(lambda: _state(h, created["id"], "sent"), "the campaign to end")
    assert view["stats"]["sent"] == 25 and view["stats"]["pending"] == 0
    await eventually(lambda: _delivered(h, 25), "delivery")
    per_recipient = Counter(r for received in h.world.received() for r in received.rcpt_to)
    assert set(per_recipient.values()) == {1} and len(per_recipient) == 25


async def _is(h: Harness, campaign_id: int, sent: int) -> bool:
    return await _sent(h, campaign_id) == sent


async def _state(h: Harness, campaign_id: int, state: str) -> dict[str, Any] | None:
    view = await campaign(h, campaign_id)
    return view if view["state"] == state else None


async def _delivered(h: Harness, count: int) -> bool:
    return len(h.world.received()) == count


async def test_a_recipient_marked_sent_can_never_be_stored_twice(h: Harness) -> None:
    """The progress cursor moves in the message's transaction: a second store of it rolls back whole."""
    created = await _throttled_campaign(h, 1, rate=1)
    h.platform.core.audience.runner.stop()  # this test plays the runner itself
    (row,) = await h.platform.core.db.run(campaign_store.list_for, h.account_id)
    await h.platform.core.db.run(start, row, h.clock.now(), 100)
    (pending,) = await h.platform.core.db.run(campaign_store.next_pending, created["id"], 10)
    draft = Draft(
        from_=parse_address("news@acme.test"), to=[Address(pending.email)], text="hi", stream="broadcast"
    )

    def mark(conn: Connection, accepted: list[Accepted]) -> None:
        campaign_store.record(
            conn, [campaign_store.Progress(pending.id, "sent", "", accepted[0].id)], h.clock.now()
        )

    await h.platform.core.accepter.accept(h.account_id, [Submission(draft)], prefix="", on_commit=mark)
    with pytest.raises(campaign_store.AlreadySent):
        await h.platform.core.accepter.accept(h.account_id, [Submission(draft)], prefix="", on_commit=mark)
    events = await h.platform.core.db.run(list_events, EventFilter(h.account_id, types=["accepted"]), 10)
    assert len(events) == 1  # the second message was never stored


async def test_scheduled_campaign_starts_when_its_time_comes(h: Harness) -> None:
    news = await create_list(h)
    await subscribe(h, news["id"], "early@outlook.test")
    at = (h.clock.now() + timedelta(hours=2)).isoformat()
    created = await create_campaign(h, news["id"], send_at=at)
    assert created["state"] == "scheduled"
    assert not await h.platform.core.audience.runner.tick()
    assert (await campaign(h, created["id"]))["state"] == "scheduled"
    h.clock.advance(2 * 3600)
    h.platform.core.audience.runner.wake()
    await eventually(lambda: _state(h, created["id"], "sent"), "the scheduled campaign to be sent")
    await eventually(lambda: _delivered(h, 1), "delivery")


async def test_segment_by_attribute_and_skipped_contacts_are_counted_with_the_reason(h: Harness) -> None:
    news = await create_list(h)
    for i, plan in enumerate(["pro", "free", "pro", "pro"]):
        await subscribe(h, news["id"], f"user{i}@yahoo.test", attributes={"plan": plan, "seats": i * 10})
    segment = await h.client.post(
        f"/v1/lists/{news['id']}/segments",
        json={"name": "big pro", "conditions": [{"attribute": "plan", "op": "eq", "value": "pro"},
                                                {"attribute": "seats", "op": "gte", "value": 20}]},
    )  # fmt: skip
    assert segment.status_code == 201 and segment.json()["subscribers"] == 2
    created = await create_campaign(h, news["id"], segment_id=segment.json()["id"], rate=1)
    await h.client.post(f"/v1/campaigns/{created['id']}/send")
    await eventually(lambda: _is(h, created["id"], 1), "the first message")
    # user3 leaves before their turn: skipped, not mailed
    unsubscribed = await h.client.post(
        f"/v1/lists/{news['id']}/contacts",
        json={"email": "user3@yahoo.test", "consent": {"source": "signup form", "confirmed": True}},
    )
    assert unsubscribed.json()["outcome"] == "unchanged"
    token = h.platform.core.audience.tokens.unsubscribe(unsubscribed.json()["contact_id"], news["id"])
    await h.client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
    h.clock.advance(1)
    h.platform.core.audience.runner.wake()
    view = await eventually(lambda: _state(h, created["id"], "sent"), "the campaign to end")
    assert view["stats"]["recipients"] == 2
    assert view["stats"]["sent"] == 1 and view["stats"]["skipped"] == 1
    assert view["skipped_reasons"] == {"not subscribed (unsubscribed)": 1}
    assert [r.rcpt_to for r in h.world.received()] == [["user2@yahoo.test"]]


async def test_template_errors_are_refused_with_the_line_and_text_is_made_from_html(h: Harness) -> None:
    news = await create_list(h)
    bad = await h.client.post(
        "/v1/campaigns",
        json={"name": "x", "list_id": news["id"], "subject": "s", "html": "<p>a</p>\n<p>{% if %}</p>"},
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "html" and "line 2" in bad.json()["errors"][0]["reason"]
    unsafe = await h.client.post(
        "/v1/campaigns",
        json={"name": "x", "list_id": news["id"], "subject": "s", "html": "{{ ''.__class__.__mro__ }}"},
    )
    assert unsafe.status_code == 422 and "unsafe" in unsafe.json()["detail"]

    await subscribe(h, news["id"], "reader@outlook.test", attributes={"first_name": "<b>Ana</b>"})
    created = await create_campaign(
        h,
        news["id"],
        html='<p>Hi {{ contact.first_name }}, see <a href="https://acme.test/spring">the sale</a>.</p>',
    )
    await send_and_finish(h, created["id"])
    message = parsed(to(h, "reader@outlook.test")[0])
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "&lt;b&gt;Ana&lt;/b&gt;" in html  # attributes are escaped in HTML
    assert "the sale <https://acme.test/spring>" in text and "Unsubscribe: http://" in text
    assert "Unsubscribe</a>" in html


async def test_a_campaign_paused_by_the_accounts_standing_resumes_when_an_administrator_approves(
    h: Harness,
) -> None:
    news = await create_list(h)
    for i in range(5):
        await subscribe(h, news["id"], f"fan{i}@yahoo.test")
    created = await create_campaign(h, news["id"])
    key = (await h.platform.core.admin_keys.create("ops", actor=SYSTEM)).token
    async with httpx.AsyncClient(
        base_url=h.platform.api_url, headers={"Authorization": f"Bearer {key}"}
    ) as admin:
        paused = await admin.post(
            f"/v1/admin/accounts/{h.account_id}/streams",
            json={"stream": "broadcast", "state": "paused", "reason": "complaints"},
        )
        assert paused.status_code == 200, paused.text
        await h.client.post(f"/v1/campaigns/{created['id']}/send")
        view = await eventually(lambda: _state(h, created["id"], "paused"), "the gate to pause the campaign")
        assert view["paused_for"] == "standing" and "complaints" in view["error"]
        assert view["stats"]["sent"] == 0

        by_sender = await create_campaign(h, news["id"], name="Held back")
        await h.client.post(f"/v1/campaigns/{by_sender['id']}/schedule", json={"at": "2030-01-01T00:00:00Z"})
        assert (await h.client.post(f"/v1/campaigns/{by_sender['id']}/pause")).json()[
            "paused_for"
        ] == "sender"

        reviews = (await admin.get("/v1/admin/reviews")).json()["data"]
        approved = await admin.post(f"/v1/admin/reviews/{reviews[0]['id']}/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["campaigns_resumed"] == 1
    done = await eventually(lambda: _state(h, created["id"], "sent"), "the resumed campaign to end")
    assert done["stats"]["sent"] == 5 and done["error"] == "" and done["paused_for"] is None
    assert (await campaign(h, by_sender["id"]))["state"] == "paused"  # the sender's own pause stands


async def test_a_campaign_stopped_by_the_warm_up_limit_resumes_when_the_day_leaves_room(
    fresh_world: World, tmp_path: Path
) -> None:
    h = await start_harness(
        fresh_world,
        f"sqlite:///{tmp_path / 'warmup.db'}",
        audience={"tick_seconds": 0.05, "campaign_batch": 5},
        warmup={"tiers": [10, 20]},
    )
    try:
        news = await create_list(h)
        for i in range(15):
            await subscribe(h, news["id"], f"fan{i:02d}@yahoo.test")
        created = await create_campaign(h, news["id"])
        await h.client.post(f"/v1/campaigns/{created['id']}/send")
        view = await eventually(lambda: _state(h, created["id"], "paused"), "the limit to pause the campaign")
        assert view["paused_for"] == "standing" and view["stats"]["sent"] == 10
        assert "per 24 hours" in view["error"]
        assert await h.platform.core.reputation.resume_campaigns() == 0  # the day is still full
        h.clock.advance(25 * 3600)
        assert await h.platform.core.reputation.resume_campaigns() == 1
        h.platform.core.audience.runner.wake()
        done = await eventually(lambda: _state(h, created["id"], "sent"), "the rest of the campaign")
        assert done["stats"]["sent"] == 15
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)


async def test_a_campaign_fixed_and_rendered_in_small_chunks_mails_each_subscriber_once(
    fresh_world: World, tmp_path: Path
) -> None:
    """Recipients fixed four at a time and messages rendered at most three ahead of delivery: every
    subscribed contact gets one message; those who left or never confirmed get none, a suppressed one is
    skipped with the reason."""
    h = await start_harness(
        fresh_world,
        f"sqlite:///{tmp_path / 'chunks.db'}",
        audience={"tick_seconds": 0.05, "recipients_chunk": 4, "lookahead": 3, "campaign_batch": 2},
    )
    try:
        news = await create_list(h)
        people = [f"fan{i:02d}@yahoo.test" for i in range(15)]
        ids = {}
        for i, address in enumerate(people):
            ids[address] = (await subscribe(h, news["id"], address, confirmed=i != 4))["contact_id"]
        for leaver in ("fan01@yahoo.test", "fan09@yahoo.test"):
            token = h.platform.core.audience.tokens.unsubscribe(ids[leaver], news["id"])
            assert (await h.client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})).is_success
        suppressed = await h.client.post("/v1/suppressions", json={"address": "fan12@yahoo.test"})
        assert suppressed.status_code == 201, suppressed.text
        created = await create_campaign(h, news["id"])
        view = await send_and_finish(h, created["id"])
        assert view["stats"]["recipients"] == 12  # 15 less two who left and one never confirmed
        assert view["stats"]["sent"] == 11 and view["stats"]["skipped"] == 1
        assert list(view["skipped_reasons"]) == ["suppressed: manual (account)"]
        mailed = Counter(r.rcpt_to[0] for r in h.world.received() if parsed(r)["Subject"] == "Hello friend")
        expected = set(people) - {
            "fan01@yahoo.test",
            "fan04@yahoo.test",
            "fan09@yahoo.test",
            "fan12@yahoo.test",
        }
        assert set(mailed) == expected and set(mailed.values()) == {1}
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)


async def test_a_campaign_says_when_its_recipients_are_all_fixed(fresh_world: World, tmp_path: Path) -> None:
    """`send` answers after the first chunk of recipients; until the last one is fixed the campaign says
    its recipient count is not final."""
    h = await start_harness(
        fresh_world, f"sqlite:///{tmp_path / 'final.db'}", audience={"recipients_chunk": 4}
    )
    try:
        h.platform.core.audience.runner.stop()  # only `send` fixes recipients, so the middle can be seen
        news = await create_list(h)
        for i in range(10):
            await subscribe(h, news["id"], f"fan{i:02d}@yahoo.test")
        created = await create_campaign(h, news["id"])
        assert created["recipients_final"] is False and created["recipients_fixed_at"] is None
        sent = await h.client.post(f"/v1/campaigns/{created['id']}/send")
        assert sent.status_code == 200 and sent.json()["recipients_final"] is False
        view = await campaign(h, created["id"])
        assert view["stats"]["recipients"] == 4 and view["recipients_final"] is False

        row = await h.platform.core.audience.campaigns.get(h.account_id, created["id"])
        while not await h.platform.core.db.run(fix_recipients, row, h.clock.now(), 4):  # as the runner does
            pass
        view = await campaign(h, created["id"])
        assert view["stats"]["recipients"] == 10 and view["recipients_final"] is True
        assert datetime.fromisoformat(view["recipients_fixed_at"]) == h.clock.now()
        listed = (await h.client.get("/v1/campaigns")).json()["data"]
        assert [c["recipients_final"] for c in listed] == [True]
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)
