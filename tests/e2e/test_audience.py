"""Consent and unsubscribing end to end: double opt-in, the hosted form, the unsubscribe page, the
preference center, the mailto: unsubscribe through the inbound listener, and re-confirmation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from estafeta.world import World
from tests.e2e.audience_support import (
    campaign,
    contacts,
    create_campaign,
    create_list,
    eventually,
    link,
    send_and_finish,
    subscribe,
    to,
)
from tests.e2e.harness import Harness, start_harness


@pytest.fixture
async def h(fresh_world: World, tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await start_harness(
        fresh_world, f"sqlite:///{tmp_path / 'audience.db'}", reports=True, audience={"tick_seconds": 0.05}
    )
    yield harness
    await harness.client.aclose()
    await harness.platform.stop(grace=2)


def _path(url: str) -> str:
    return urlsplit(url).path


async def _events(h: Harness, kind: str) -> list[dict[str, Any]]:
    response = await h.client.get("/v1/events", params={"type": kind})
    return list(response.json()["data"])


async def test_double_opt_in_unconfirmed_contacts_get_no_campaign_until_they_click(h: Harness) -> None:
    news = await create_list(h)
    added = await subscribe(h, news["id"], "ana@yahoo.test", confirmed=False)
    assert added["status"] == "unconfirmed" and added["outcome"] == "new"
    await eventually(lambda: _arrived(h, "ana@yahoo.test", 1), "the confirmation mail")
    confirmation = to(h, "ana@yahoo.test")[0]
    confirm_url = link(confirmation, "confirm")

    skipped = await create_campaign(h, news["id"], name="before")
    view = await send_and_finish(h, skipped["id"])
    assert view["stats"]["recipients"] == 0 and len(to(h, "ana@yahoo.test")) == 1

    page = await h.client.get(_path(confirm_url))
    assert page.status_code == 200 and "You are subscribed" in page.text and "set-cookie" not in page.headers
    (ana,) = await contacts(h, news["id"])
    assert ana["status"] == "subscribed" and ana["confirmed_at"] and ana["consent_source"] == "signup form"
    assert ana["consent_at"]

    after = await create_campaign(h, news["id"], name="after")
    view = await send_and_finish(h, after["id"])
    assert view["stats"]["delivered"] == 1 and len(to(h, "ana@yahoo.test")) == 2


async def _arrived(h: Harness, address: str, count: int) -> bool:
    return len(to(h, address)) >= count


async def test_confirmation_links_expire(h: Harness) -> None:
    news = await create_list(h)
    await subscribe(h, news["id"], "slow@yahoo.test", confirmed=False)
    await eventually(lambda: _arrived(h, "slow@yahoo.test", 1), "the confirmation mail")
    confirm_url = link(to(h, "slow@yahoo.test")[0], "confirm")
    h.clock.advance(15 * 86400)  # past confirm_days and the re-confirmation grace
    page = await h.client.get(_path(confirm_url))
    assert page.status_code == 404
    assert (await contacts(h, news["id"]))[0]["status"] == "unconfirmed"


async def test_hosted_form_has_an_unchecked_consent_box_and_records_the_consent(h: Harness) -> None:
    news = await create_list(h, "Weekly")
    form_path = _path(news["form_url"])
    page = await h.client.get(form_path, headers={"Authorization": ""})
    assert page.status_code == 200
    assert 'type="checkbox" name="consent" value="yes" required>' in page.text
    assert "checked" not in page.text

    refused = await h.client.post(form_path, data={"email": "bo@yahoo.test"}, headers={"Authorization": ""})
    assert refused.status_code == 422 and "tick the box" in refused.text
    assert await contacts(h, news["id"]) == []

    accepted = await h.client.post(
        form_path, data={"email": "bo@yahoo.test", "consent": "yes"}, headers={"Authorization": ""}
    )
    assert accepted.status_code == 200 and "Check your inbox" in accepted.text
    assert "set-cookie" not in accepted.headers
    (bo,) = await contacts(h, news["id"])
    assert bo["status"] == "unconfirmed" and bo["consent_source"].startswith("hosted form")
    assert bo["consent_at"] == h.clock.now().isoformat().replace("+00:00", "Z")
    await eventually(lambda: _arrived(h, "bo@yahoo.test", 1), "the confirmation mail")


async def test_body_link_page_has_already_unsubscribed_and_one_click_is_idempotent(h: Harness) -> None:
    news = await create_list(h)
    await subscribe(h, news["id"], "cy@outlook.test")
    await subscribe(h, news["id"], "di@outlook.test")
    created = await create_campaign(h, news["id"])
    await send_and_finish(h, created["id"])

    page_url = link(to(h, "cy@outlook.test")[0], "u")
    page = await h.client.get(_path(page_url), headers={"Authorization": ""})
    assert page.status_code == 200 and "is unsubscribed from" in page.text and "<input" not in page.text
    assert "set-cookie" not in page.headers
    statuses = {c["email"]: c["status"] for c in await contacts(h, news["id"])}
    assert statuses == {"cy@outlook.test": "unsubscribed", "di@outlook.test": "subscribed"}

    one_click = _path(link(to(h, "di@outlook.test")[0], "u"))
    for _ in range(3):
        response = await h.client.post(
            one_click, content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": ""},
        )  # fmt: skip
        assert response.status_code == 200 and "set-cookie" not in response.headers
    wrong = await h.client.post(one_click, data={"List-Unsubscribe": "Maybe"})
    assert wrong.status_code == 400
    forged = await h.client.post(one_click[:-3] + "abc", data={"List-Unsubscribe": "One-Click"})
    assert forged.status_code == 404

    events = await _events(h, "unsubscribed")
    assert sorted((e["recipient"], e["data"]["method"]) for e in events) == [
        ("cy@outlook.test", "page"),
        ("di@outlook.test", "one-click"),
    ]
    assert all(e["message_id"] and e["data"]["campaign_id"] == created["id"] for e in events)
    assert (await campaign(h, created["id"]))["stats"]["unsubscribed"] == 2


async def test_preference_center_lists_every_subscription_and_all_stops_only_broadcast(h: Harness) -> None:
    news = await create_list(h, "News")
    offers = await create_list(h, "Offers")
    for mailing_list in (news, offers):
        await subscribe(h, mailing_list["id"], "eve@outlook.test")
    created = await create_campaign(h, news["id"])
    await send_and_finish(h, created["id"])
    prefs = _path(link(to(h, "eve@outlook.test")[0], "p"))

    page = await h.client.get(prefs)
    assert page.status_code == 200 and "News" in page.text and "Offers" in page.text
    assert page.text.count("checked") == 2

    saved = await h.client.post(prefs, data={"list": str(news["id"]), "action": "save"})
    assert saved.status_code == 200 and saved.text.count("checked") == 1
    assert (await contacts(h, offers["id"]))[0]["status"] == "unsubscribed"
    assert (await contacts(h, news["id"]))[0]["status"] == "subscribed"

    everything = await h.client.post(prefs, data={"action": "all"})
    assert everything.status_code == 200 and "no list mail from this sender" in everything.text
    suppressed = await h.client.get("/v1/suppressions", params={"q": "eve@outlook.test"})
    assert [e["reason"] for e in suppressed.json()["data"]] == ["unsubscribe"]

    # transactional mail still reaches the address; broadcast mail does not
    receipt = await h.send(to=["eve@outlook.test"], subject="Your receipt")
    await h.wait_state(receipt, "delivered")
    promo = await h.client.post(
        "/v1/messages",
        json={"from": "news@acme.test", "to": ["eve@outlook.test"], "subject": "Hi", "text": "hi",
              "stream": "broadcast"},
    )  # fmt: skip
    assert promo.json()["messages"][0]["recipients"] == [
        {"email": "eve@outlook.test", "state": "suppressed", "reason": "unsubscribe", "attempts": 0,
         "next_attempt_at": None, "last_code": None, "last_reply": None}
    ]  # fmt: skip


async def test_mailto_unsubscribe_is_handled_by_the_inbound_listener(h: Harness) -> None:
    news = await create_list(h)
    await subscribe(h, news["id"], "unsub-fay@yahoo.test")
    await subscribe(h, news["id"], "gus@yahoo.test")
    created = await create_campaign(h, news["id"])
    await send_and_finish(h, created["id"])

    async def left() -> list[Any] | None:
        gone = await contacts(h, news["id"], "unsubscribed")
        return gone or None

    (fay,) = await eventually(left, "the mailto unsubscribe")
    assert fay["email"] == "unsub-fay@yahoo.test" and fay["unsubscribe_method"] == "mailto"
    (mailed,) = h.world.unsubscribes()
    assert mailed.method == "mailto" and mailed.target.startswith("unsub+")
    assert mailed.target.endswith("@bounces.estafeta.test")
    assert (await contacts(h, news["id"], "subscribed"))[0]["email"] == "gus@yahoo.test"


async def test_inactive_contacts_are_asked_to_reconfirm_and_dropped_when_silent(h: Harness) -> None:
    news = await create_list(h)
    await subscribe(h, news["id"], "hal@outlook.test")
    await subscribe(h, news["id"], "ivy@outlook.test")
    h.clock.advance(181 * 86400)  # the runner looks for inactive contacts hourly
    h.platform.core.audience.runner.wake()
    await eventually(lambda: _arrived(h, "ivy@outlook.test", 1), "the re-confirmation mails")
    await eventually(lambda: _arrived(h, "hal@outlook.test", 1), "the re-confirmation mails")
    listed = (await h.client.get("/v1/campaigns")).json()["data"]
    assert [c["kind"] for c in listed] == ["reconfirm"]

    answer = await h.client.get(_path(link(to(h, "ivy@outlook.test")[0], "confirm")))
    assert answer.status_code == 200 and "confirmed" in answer.text

    h.clock.advance(15 * 86400)
    h.platform.core.audience.runner.wake()

    async def settled() -> dict[str, Any] | None:
        statuses = {c["email"]: (c["status"], c["unsubscribe_method"]) for c in await contacts(h, news["id"])}
        return statuses if statuses["hal@outlook.test"][0] == "unsubscribed" else None

    assert await eventually(settled, "the silent contact to be dropped") == {
        "hal@outlook.test": ("unsubscribed", "not-reconfirmed"),
        "ivy@outlook.test": ("subscribed", None),
    }


async def test_someone_who_left_everything_can_come_back_through_the_form(h: Harness) -> None:
    news = await create_list(h)
    await subscribe(h, news["id"], "kim@outlook.test")
    first = await create_campaign(h, news["id"])
    await send_and_finish(h, first["id"])
    page = _path(link(to(h, "kim@outlook.test")[0], "u"))
    left = await h.client.post(f"{page}/all", headers={"Authorization": ""})
    assert left.status_code == 200 and "unsubscribed from everything" in left.text
    assert [c["status"] for c in await contacts(h, news["id"])] == ["unsubscribed"]

    back = await h.client.post(_path(news["form_url"]), data={"email": "kim@outlook.test", "consent": "yes"})
    assert "Check your inbox" in back.text
    await eventually(lambda: _arrived(h, "kim@outlook.test", 2), "the confirmation mail")
    confirmed = await h.client.get(_path(link(to(h, "kim@outlook.test")[1], "confirm")))
    assert confirmed.status_code == 200
    suppressed = await h.client.get("/v1/suppressions", params={"q": "kim@outlook.test"})
    assert suppressed.json()["data"] == []
    second = await create_campaign(h, news["id"])
    view = await send_and_finish(h, second["id"])
    assert view["stats"]["delivered"] == 1 and len(to(h, "kim@outlook.test")) == 3
