"""Statistics end to end: counts add up to the event log, receivers' Postmaster figures flow in, /metrics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx

from estafeta.world import World
from tests.e2e.harness import Harness, start_harness


async def _all_events(harness: Harness) -> list[dict]:  # type: ignore[type-arg]
    events: list[dict] = []  # type: ignore[type-arg]
    cursor = None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = (await harness.client.get("/v1/events", params=params)).json()
        events.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return events


async def test_stats_add_up_to_the_event_log_and_carry_receivers_figures(
    fresh_world: World, tmp_path: Path
) -> None:
    h = await start_harness(
        fresh_world,
        f"sqlite:///{tmp_path / 'e2e.db'}",
        postmaster={"sources": fresh_world.postmaster_sources()},
    )
    try:
        mail = [
            {"to": ["ana@gmail.test"], "metadata": {"campaign_id": "spring"}},
            {"to": ["bo@yahoo.test", "complainer7@yahoo.test"], "metadata": {"campaign_id": "spring"}},
            {"to": ["cy@outlook.test"], "tags": ["campaign:autumn"]},
            {"to": ["nobody@bounce.test"]},
            {"to": ["busy@full.test"]},
            {"to": ["dee@yahoo.test"], "from": "Billing <billing@ed.acme.test>"},
        ]
        ids = [await h.send(**m) for m in mail]
        for message_id in ids:
            await h.wait_for(
                message_id, lambda v: all(r["state"] not in ("queued",) for r in v["recipients"]), timeout=15
            )
        events = await _all_events(h)
        logged = Counter(e["type"] for e in events)
        assert logged["delivered"] == 5 and logged["bounced"] == 1 and logged["deferred"] == 1

        params = [("group_by", d) for d in ("provider", "domain", "stream", "campaign")] + [
            ("bucket", "hour")
        ]
        found = (await h.client.get("/v1/stats", params=params)).json()
        total = found["total"]["counts"]
        for kind, count in logged.items():
            assert total[kind] == count
            assert sum(g["counts"][kind] for g in found["data"]) == count
        assert total["sent"] == logged["queued"] == 7
        assert total["bounced_hard"] + total["bounced_soft"] == total["bounced"] == 1
        assert found["total"]["rates"] == {"bounce": 1 / 6, "complaint": 0.0}

        by_provider = (
            await h.client.get("/v1/stats", params={"group_by": "provider", "bucket": "none"})
        ).json()
        providers = {g["provider"]: g["counts"] for g in by_provider["data"]}
        assert providers["yahoo.test"]["delivered"] == 3 and providers["bounce.test"]["bounced_hard"] == 1
        assert providers["full.test"]["deferred"] == 1
        campaigns = (await h.client.get("/v1/stats", params={"group_by": "campaign", "bucket": "day"})).json()
        sent = {g["campaign"]: g["counts"]["sent"] for g in campaigns["data"]}
        assert sent == {"spring": 3, "autumn": 1, None: 3}
        assert {g["bucket"] for g in campaigns["data"]} == {"2026-01-01T00:00:00Z"}
        domains = (await h.client.get("/v1/stats", params={"group_by": "domain", "bucket": "none"})).json()
        assert {g["domain"]: g["counts"]["sent"] for g in domains["data"]} == {
            "acme.test": 6,
            "ed.acme.test": 1,
        }

        # The receivers' own figures, polled from their Postmaster services (dated by the world's clock).
        assert await h.platform.core.postmaster.poll_once() >= 3
        wide = {"bucket": "none", "from": "2025-01-01T00:00:00Z", "to": "2028-01-01T00:00:00Z"}
        figures = (await h.client.get("/v1/stats", params=wide)).json()["postmaster"]
        by_source = {(f["provider"], f["domain"]): f for f in figures}
        yahoo = by_source[("yahoo.test", "acme.test")]
        assert yahoo["messages"] == 2 and yahoo["spam_rate"] == 0.5 and yahoo["domain_reputation"] == "BAD"
        gmail = by_source[("gmail.test", "acme.test")]
        assert (gmail["dkim_pass_rate"], gmail["spf_pass_rate"], gmail["spam_rate"]) == (1.0, 1.0, 0.0)
        assert gmail["domain_reputation"] == "HIGH"
        assert by_source[("yahoo.test", "ed.acme.test")]["messages"] == 1
        assert ("bounce.test", "acme.test") not in by_source  # it accepted nothing
        assert (await h.client.get("/v1/stats")).json()["postmaster"] == []  # outside the default period
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)


async def test_stats_requests_are_validated(harness: Harness) -> None:
    for params in ({"group_by": "planet"}, {"bucket": "week"}, {"from": "2026-01-01T00:00:00"}):
        assert (await harness.client.get("/v1/stats", params=params)).status_code == 422
    reversed_period = {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    assert (await harness.client.get("/v1/stats", params=reversed_period)).status_code == 422
    async with httpx.AsyncClient(base_url=harness.platform.api_url) as anonymous:
        assert (await anonymous.get("/v1/stats")).status_code == 401


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the exposition")


async def test_metrics_for_operators(harness: Harness) -> None:
    ok = await harness.send(to=["ana@outlook.test"])
    bad = await harness.send(to=["nobody@bounce.test"])
    await harness.wait_state(ok, "delivered")
    await harness.wait_state(bad, "bounced")
    async with httpx.AsyncClient(base_url=harness.platform.api_url) as prometheus:
        scraped = await prometheus.get("/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    assert _sample(text, 'estafeta_accepted_messages_total{source="api"}') == 2
    assert _sample(text, 'estafeta_delivery_attempts_total{outcome="delivered"}') == 1
    assert _sample(text, 'estafeta_delivery_attempts_total{outcome="bounced"}') == 1
    assert _sample(text, 'estafeta_queue_entries{state="delivered"}') == 1
    assert _sample(text, 'estafeta_queue_entries{state="queued"}') == 0
    assert _sample(text, 'estafeta_webhook_deliveries{state="pending"}') == 0


async def test_metrics_can_have_their_own_listener(fresh_world: World, tmp_path: Path) -> None:
    h = await start_harness(fresh_world, f"sqlite:///{tmp_path / 'e2e.db'}", metrics={"port": 0})
    try:
        assert h.platform.metrics_port is not None
        async with httpx.AsyncClient() as prometheus:
            own = await prometheus.get(f"http://127.0.0.1:{h.platform.metrics_port}/metrics")
            assert own.status_code == 200 and "estafeta_queue_entries" in own.text
            assert (await prometheus.get(f"{h.platform.api_url}/metrics")).status_code == 404
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)
