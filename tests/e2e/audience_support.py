"""Helpers for the audience end-to-end tests: lists, contacts, campaigns through the HTTP API."""

from __future__ import annotations

import asyncio
import email
import re
import time
from collections.abc import Awaitable, Callable
from email import policy
from email.message import EmailMessage
from typing import Any, TypeVar

from estafeta.world import Received
from tests.e2e.harness import Harness

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = 30.0) -> T:
    """Poll `check` until it returns something truthy (real time bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def create_list(h: Harness, name: str = "News", **fields: Any) -> dict[str, Any]:
    body = {"name": name, "from_address": "Acme News <news@acme.test>", **fields}
    response = await h.client.post("/v1/lists", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def subscribe(
    h: Harness, list_id: int, address: str, confirmed: bool = True, **extra: Any
) -> dict[str, Any]:
    body = {"email": address, "consent": {"source": "signup form", "confirmed": confirmed}, **extra}
    response = await h.client.post(f"/v1/lists/{list_id}/contacts", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def contacts(h: Harness, list_id: int, status: str | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"limit": 1000}
    if status:
        params["status"] = status
    response = await h.client.get(f"/v1/lists/{list_id}/contacts", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def create_campaign(h: Harness, list_id: int, **fields: Any) -> dict[str, Any]:
    body = {
        "name": "Spring",
        "list_id": list_id,
        "subject": "Hello {{ contact.first_name | default('friend') }}",
        "html": "<p>Hi {{ contact.first_name | default('there') }}, spring is here.</p>",
        "rate": 5000,
        **fields,
    }
    response = await h.client.post("/v1/campaigns", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def campaign(h: Harness, campaign_id: int) -> dict[str, Any]:
    response = await h.client.get(f"/v1/campaigns/{campaign_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def send_and_finish(h: Harness, campaign_id: int, timeout: float = 60.0) -> dict[str, Any]:
    """Send a campaign, then wait until it is sent and every message it sent has left the queue."""
    response = await h.client.post(f"/v1/campaigns/{campaign_id}/send")
    assert response.status_code == 200, response.text

    async def done() -> dict[str, Any] | None:
        view = await campaign(h, campaign_id)
        stats = view["stats"]
        settled = stats["delivered"] + stats["bounced"] + stats.get("suppressed", 0)
        return view if view["state"] == "sent" and settled >= stats["sent"] else None

    return await eventually(done, f"campaign {campaign_id} to finish", timeout)


def parsed(received: Received) -> EmailMessage:
    message = email.message_from_bytes(received.data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body_text(received: Received) -> str:
    part = parsed(received).get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def link(received: Received, path: str) -> str:
    """The first link to `/<path>/…` in a message's text part."""
    match = re.search(rf"https?://[^\s<>]+/{path}/[^\s<>]+", body_text(received))
    assert match, f"no /{path}/ link in {body_text(received)!r}"
    return match.group(0)


def to(h: Harness, address: str) -> list[Received]:
    return [r for r in h.world.received() if address in r.rcpt_to]
