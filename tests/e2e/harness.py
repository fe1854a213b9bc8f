"""A platform wired to the simulated internet, with a manual clock, for end-to-end tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from estafeta.audit import SYSTEM
from estafeta.clock import ManualClock
from estafeta.config import LinkSettings
from estafeta.platform import Platform
from estafeta.sandbox import sandbox_settings
from estafeta.world import World
from tests.factories import add_verified_domain


@dataclass
class Harness:
    platform: Platform
    world: World
    clock: ManualClock
    client: httpx.AsyncClient
    token: str
    account_id: int

    async def send(self, **message: Any) -> str:
        body = {"from": "Acme <hello@acme.test>", "subject": "Hello", "text": "Hello there.\n", **message}
        response = await self.client.post("/v1/messages", json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["messages"][0]["id"])

    async def message(self, message_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/messages/{message_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def wait_for(
        self, message_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        """Poll the API until the message satisfies `predicate` (real time bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            view = await self.message(message_id)
            if predicate(view):
                return view
            if time.monotonic() > deadline:
                raise AssertionError(f"message never reached the expected state: {view}")
            await asyncio.sleep(0.05)

    async def wait_state(self, message_id: str, *states: str, timeout: float = 15.0) -> dict[str, Any]:
        return await self.wait_for(
            message_id, lambda v: all(r["state"] in states for r in v["recipients"]), timeout
        )

    def advance(self, seconds: float) -> None:
        """Move time forward and wake the delivery engine so due retries are claimed at once."""
        self.clock.advance(seconds)
        self.platform.engine.notify()


async def start_harness(
    world: World, database_url: str, *, reports: bool = False, **overrides: Any
) -> Harness:
    """A platform on `database_url` delivering into `world`; with `reports`, its inbound listener runs on
    a free port and the world mails late bounces, complaints and automatic replies to it."""
    clock = ManualClock()
    if reports:
        overrides["inbound"] = {"enabled": True, "port": 0, **overrides.get("inbound", {})}
    delivery = {
        "poll_interval": 0.05,
        "idle_timeout": 0.5,
        "throttle_pause": 0.05,
        **overrides.pop("delivery", {}),
    }
    webhooks = {"poll_interval": 0.05, "timeout": 5, **overrides.pop("webhooks", {})}
    # Links are followed through the world's web proxy, where short.test is a scripted shortener.
    links = {
        "http_proxy": world.web.url,
        "shorteners": [*LinkSettings().shorteners, "short.test"],
        **overrides.pop("links", {}),
    }
    # Tests send freely unless they are about warm-up limits (and pass `warmup` themselves).
    warmup = overrides.pop("warmup", {"tiers": []})
    # The platform trusts the world's certificate authority and finds its MTA-STS policy hosts.
    mta_sts = {"ca_file": world.ca_file, "policy_port": world.https_port, **overrides.pop("mta_sts", {})}
    settings = sandbox_settings(
        database_url,
        world.dns_address,
        world.smtp_port,
        delivery=delivery,
        webhooks=webhooks,
        links=links,
        warmup=warmup,
        mta_sts=mta_sts,
        **overrides,
    )
    platform = Platform(settings, clock)
    core = platform.core
    account = await core.accounts.create("acme", actor=SYSTEM)
    for name in ("acme.test", "ed.acme.test"):
        algorithm = "ed25519-sha256" if name.startswith("ed.") else "rsa-sha256"
        await add_verified_domain(core, account.id, name, algorithm)  # published in the world's DNS
    token = (await core.api_keys.create(account.id, "tests", actor=SYSTEM)).token
    await platform.start()
    if reports:
        assert platform.inbound_address is not None
        world.report_to(*platform.inbound_address)
    client = httpx.AsyncClient(
        base_url=platform.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    return Harness(platform, world, clock, client, token, account.id)
