"""The core's wiring: who reacts to what is decided at construction, and services keep their caches right."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from estafeta.audit import SYSTEM, Actor
from estafeta.clock import ManualClock
from estafeta.config import Settings
from estafeta.core import Core
from estafeta.store import reputation as reputation_store
from estafeta.streams import StreamError
from estafeta.webhook_endpoints import WebhookError
from estafeta.world import World
from tests.factories import add_sender, sandbox_dns


@pytest.fixture
async def core(tmp_path: Path, dns_world: World) -> AsyncIterator[Core]:
    woken: list[str] = []
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'core.db'}",
        dkim_algorithm="ed25519-sha256",
        **sandbox_dns(dns_world),
    )
    core = Core(settings, clock=ManualClock(), wake_delivery=lambda: woken.append("delivery"))
    core.woken = woken  # type: ignore[attr-defined]
    yield core
    core.close()


async def test_delivery_engines_report_outcomes_to_reputation(core: Core) -> None:
    engine = core.delivery_engine()
    assert engine.queue.after_finish == core.reputation.after_outcomes
    assert engine.sources is core.streams.sources


async def test_a_stream_change_reaches_the_accept_path_at_once(core: Core) -> None:
    sender = await add_sender(core, "acme", "mail.acme.test", "news.acme.test")
    assert await core.streams.from_domain(sender.account_id, "broadcast") is None  # read, and cached
    await core.streams.put(sender.account_id, "broadcast", "news.acme.test", "", actor=SYSTEM)
    assert await core.streams.from_domain(sender.account_id, "broadcast") == "news.acme.test"
    with pytest.raises(StreamError) as taken:
        await core.streams.put(sender.account_id, "transactional", "news.acme.test", "", actor=SYSTEM)
    assert taken.value.status == 409


async def test_approving_a_review_wakes_delivery(core: Core) -> None:
    sender = await add_sender(core, "acme", "acme.test")
    await core.reputation.set_stream(
        sender.account_id, "broadcast", "paused", "too many bounces", Actor("admin:x", "127.0.0.1")
    )
    (review,) = await core.reputation.reviews()
    core.woken.clear()  # type: ignore[attr-defined]
    await core.reputation.approve(review.id, Actor("admin:x", "127.0.0.1"))
    assert core.woken == ["delivery"]  # type: ignore[attr-defined]
    standing = await core.db.run(reputation_store.standings, sender.account_id)
    assert standing["broadcast"].state == "active"


async def test_webhook_endpoints_are_checked_once_for_every_way_in(core: Core) -> None:
    sender = await add_sender(core, "acme")
    with pytest.raises(WebhookError) as private:
        await core.webhooks.create(sender.account_id, "http://127.0.0.1/hook", actor=SYSTEM)
    assert private.value.field == "url" and "public internet" in private.value.reason
    with pytest.raises(WebhookError) as types:
        await core.webhooks.create(
            sender.account_id, "https://hooks.example.com/", ["Not A Type"], actor=SYSTEM
        )
    assert types.value.field == "event_types"
    with pytest.raises(WebhookError) as unknown:
        await core.webhooks.remove(None, 12345, actor=SYSTEM)
    assert unknown.value.status == 404
