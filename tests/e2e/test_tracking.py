"""Open and click tracking end to end: the received HTML, the pixel and redirect, events and counts."""

from __future__ import annotations

import email
import re
from email import policy

import httpx

from estafeta.world import World
from tests.e2e.harness import Harness

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
HTML = (
    '<html><body><p>Spring sale: <a href="https://shop.acme.test/sale?x=1&amp;y=2">shop</a>, '
    '<a href="https://acme.test/about">about us</a>, <a href="mailto:help@acme.test">help</a>.</p>'
    '<p><a data-notrack href="https://acme.test/u/1">Unsubscribe</a></p></body></html>'
)
UNSUBSCRIBE = {
    "List-Unsubscribe": "<https://acme.test/u/1>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}


def _html(world: World, provider: str) -> str:
    got = world.received(provider)[-1]
    assert got.dkim == "pass"  # the rewrite happened before signing
    part = email.message_from_bytes(got.data, policy=policy.default).get_body(("html",))
    assert part is not None
    return str(part.get_content())


def _paths(html: str, kind: str) -> list[str]:
    return re.findall(rf'"http://127\.0\.0\.1:\d+(/t/{kind}/[^"]+)"', html)


async def _events(harness: Harness, message_id: str, kind: str) -> list[dict]:  # type: ignore[type-arg]
    return [e for e in (await harness.message(message_id))["events"] if e["type"] == kind]


async def test_opens_and_clicks_are_recorded_with_machine_traffic_flagged(harness: Harness) -> None:
    message_id = await harness.send(
        to=["ana@gmail.test"], stream="broadcast", html=HTML, subject="Sale", headers=UNSUBSCRIBE
    )
    await harness.wait_state(message_id, "delivered")
    html = _html(harness.world, "gmail.test")
    (pixel,) = _paths(html, "o")
    clicks = _paths(html, "c")
    assert (
        len(clicks) == 2 and 'href="mailto:help@acme.test"' in html and html.index(pixel) > html.index("help")
    )
    async with httpx.AsyncClient(base_url=harness.platform.api_url, follow_redirects=False) as recipient:
        scanned = await recipient.get(pixel, headers={"User-Agent": BROWSER})  # a scanner, right at delivery
        harness.advance(120)
        opened = await recipient.get(pixel, headers={"User-Agent": BROWSER})
        assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
        assert opened.content.startswith(b"GIF89a") and "no-store" in opened.headers["cache-control"]
        await recipient.get(pixel, headers={"User-Agent": GMAIL_PROXY})
        assert (await recipient.head(pixel, headers={"User-Agent": BROWSER})).status_code == 200
        assert scanned.status_code == 200

        sale = await recipient.get(clicks[0], headers={"User-Agent": BROWSER})
        assert sale.status_code == 302 and sale.headers["location"] == "https://shop.acme.test/sale?x=1&y=2"
        about = await recipient.get(clicks[1], headers={"User-Agent": BROWSER})  # the same second
        assert about.headers["location"] == "https://acme.test/about"

        token = clicks[0].rsplit("/", 1)[1]
        for bad in (
            f"/t/c/{token[:-3]}abc",  # tampered signature
            f"/t/c/{token.replace(token[5], 'A' if token[5] != 'A' else 'B', 1)}",  # tampered content
            f"/t/o/{token}",  # a click token is no open token
            "/t/c/https%3A%2F%2Fevil.example",
        ):
            refused = await recipient.get(bad)
            assert refused.status_code == 404 and "location" not in refused.headers
            assert refused.headers["content-type"] == "application/problem+json"

    opens = await _events(harness, message_id, "opened")
    assert [(e["data"]["machine"], e["data"].get("machine_reason")) for e in opens] == [
        (True, "opened-right-after-delivery"),
        (False, None),
        (True, "image-proxy:google"),
        (True, "head-request"),
    ]
    assert all(e["recipient"] == "ana@gmail.test" and e["data"]["user_agent"] for e in opens)
    assert opens[1]["created_at"] > opens[0]["created_at"]  # recorded at the platform's time of the hit
    found = await _events(harness, message_id, "clicked")
    assert [(e["data"]["url"], e["data"]["link"], e["data"]["machine"]) for e in found] == [
        ("https://shop.acme.test/sale?x=1&y=2", 0, False),
        ("https://acme.test/about", 1, True),
    ]
    assert found[1]["data"]["machine_reason"] == "several-links-at-once"
    total = (await harness.client.get("/v1/stats", params={"bucket": "none"})).json()["total"]["counts"]
    assert (total["opened"], total["opened_machine"], total["clicked"], total["clicked_machine"]) == (
        4,
        3,
        2,
        1,
    )


async def test_tracking_follows_stream_defaults_account_switches_and_message_overrides(
    harness: Harness,
) -> None:
    async def sent_html(**message: object) -> str:
        message_id = await harness.send(to=["ana@outlook.test"], html=HTML, **message)
        await harness.wait_state(message_id, "delivered")
        return _html(harness.world, "outlook.test")

    transactional = await sent_html()  # default: opens yes, clicks no (links in receipts stay as written)
    assert len(_paths(transactional, "o")) == 1 and _paths(transactional, "c") == []
    assert 'href="https://shop.acme.test/sale?x=1&amp;y=2"' in transactional
    override = await sent_html(tracking={"opens": False, "clicks": True})
    assert _paths(override, "o") == [] and len(_paths(override, "c")) == 2

    settings = (await harness.client.get("/v1/tracking")).json()
    assert settings["active"] and settings["base_url"] == harness.platform.api_url
    assert settings["transactional"] == {"opens": True, "clicks": False}
    assert settings["broadcast"] == {"opens": True, "clicks": True}
    changed = await harness.client.put("/v1/tracking/transactional", json={"opens": False, "clicks": False})
    assert changed.status_code == 200 and changed.json()["transactional"] == {"opens": False, "clicks": False}
    untracked = await sent_html()
    assert "/t/" not in untracked
    assert (
        await harness.client.put("/v1/tracking/promo", json={"opens": True, "clicks": True})
    ).status_code == 422


async def test_a_message_to_several_recipients_is_tracked_per_message(harness: Harness) -> None:
    message_id = await harness.send(to=["ana@gmail.test", "bo@yahoo.test"], html=HTML)
    await harness.wait_state(message_id, "delivered")
    (pixel,) = _paths(_html(harness.world, "yahoo.test"), "o")
    assert _paths(_html(harness.world, "gmail.test"), "o") == [pixel]  # one signed message for both
    harness.advance(60)
    async with httpx.AsyncClient(base_url=harness.platform.api_url) as recipient:
        assert (await recipient.get(pixel, headers={"User-Agent": BROWSER})).status_code == 200
    (opened,) = await _events(harness, message_id, "opened")
    assert opened["recipient"] is None and opened["data"]["machine"] is False
