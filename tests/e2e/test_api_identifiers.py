"""Identifiers and cursors out of range: never a 500, on SQLite and on PostgreSQL.

Every id is 64-bit on both backends: an id up to 2^63 - 1 that names nothing is a 404; a number outside
1..2^63 - 1 is a 422 before it reaches a query. Cursors this API did not hand out are a 422.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from estafeta.audit import SYSTEM
from estafeta.store.models import MAX_ID
from estafeta.world import World
from tests.e2e.harness import Harness, start_harness

IN_RANGE = (2**31, MAX_ID)  # 2^31 overflowed PostgreSQL's 32-bit ids
OUT_OF_RANGE = (0, -1, MAX_ID + 1, 2**64)
Routes = list[tuple[str, str, dict[str, Any]]]


@pytest.fixture(params=["sqlite", "postgresql"])
async def h(request: pytest.FixtureRequest, fresh_world: World, tmp_path: Path) -> AsyncIterator[Harness]:
    sqlite = f"sqlite:///{tmp_path / 'ids.db'}"
    harness = await start_harness(
        fresh_world, sqlite if request.param == "sqlite" else request.getfixturevalue("pg_url")
    )
    yield harness
    await harness.client.aclose()
    await harness.platform.stop(grace=2)


def _routes(n: int) -> Routes:
    """Every account route with an id in its path, with a body that is valid apart from the id."""
    return [
        ("GET", f"/v1/lists/{n}", {}),
        ("POST", f"/v1/lists/{n}/contacts", {"json": {"email": "a@gmail.test", "consent": {"source": "t"}}}),
        ("GET", f"/v1/lists/{n}/contacts", {}),
        (
            "POST",
            f"/v1/lists/{n}/imports",
            {
                "params": {"consent_source": "t"},
                "content": b"email\na@gmail.test\n",
                "headers": {"content-type": "text/csv"},
            },
        ),
        ("GET", f"/v1/lists/{n}/segments", {}),
        (
            "POST",
            f"/v1/lists/{n}/segments",
            {"json": {"name": "s", "conditions": [{"attribute": "a", "op": "exists"}]}},
        ),
        ("GET", f"/v1/campaigns/{n}", {}),
        ("POST", f"/v1/campaigns/{n}/send", {}),
        ("POST", f"/v1/campaigns/{n}/schedule", {"json": {"at": "2031-01-01T00:00:00Z"}}),
        ("POST", f"/v1/campaigns/{n}/pause", {}),
        ("POST", f"/v1/campaigns/{n}/resume", {}),
        ("POST", f"/v1/campaigns/{n}/cancel", {}),
        ("GET", f"/v1/webhooks/{n}", {}),
        ("PATCH", f"/v1/webhooks/{n}", {"json": {"description": "x"}}),
        ("DELETE", f"/v1/webhooks/{n}", {}),
        ("GET", f"/v1/webhooks/{n}/deliveries", {}),
        ("GET", f"/v1/webhooks/{n}/deliveries/{n}", {}),
        ("POST", f"/v1/webhooks/{n}/deliveries/{n}/replay", {}),
        ("POST", f"/v1/webhooks/{n}/test", {}),
        (
            "POST",
            "/v1/campaigns",
            {"json": {"name": "c", "list_id": n, "subject": "s", "text": "t"}},
        ),
    ]


def _admin_routes(n: int) -> Routes:
    return [
        ("GET", f"/v1/admin/reviews/{n}", {}),
        ("POST", f"/v1/admin/reviews/{n}/approve", {"json": {"note": "x"}}),
        ("POST", f"/v1/admin/reviews/{n}/reject", {}),
        ("POST", f"/v1/admin/accounts/{n}/streams", {"json": {"stream": "broadcast", "state": "paused"}}),
    ]


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def _check(client: httpx.AsyncClient, routes: Routes, status: int) -> None:
    for method, path, options in routes:
        response = await client.request(method, path, **options)
        assert response.status_code == status, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json", (method, path)


async def test_ids_out_of_range_are_404_or_422_on_every_route(h: Harness) -> None:
    admin = httpx.AsyncClient(
        base_url=h.platform.api_url,
        headers={
            "Authorization": f"Bearer {(await h.platform.core.admin_keys.create('ops', actor=SYSTEM)).token}"
        },
        timeout=30,
    )
    async with admin:
        for n in IN_RANGE:
            await _check(h.client, _routes(n), 404)
            await _check(admin, _admin_routes(n), 404)
        for n in OUT_OF_RANGE:
            await _check(h.client, _routes(n), 422)
            await _check(admin, _admin_routes(n), 422)
        # A body id out of range names its field.
        campaign = {"name": "c", "list_id": 1, "segment_id": 2**64, "subject": "s", "text": "t"}
        response = await h.client.post("/v1/campaigns", json=campaign)
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "segment_id"


async def test_crafted_cursors_are_422_on_every_paged_route(h: Harness) -> None:
    listed = await h.client.post(
        "/v1/lists", json={"name": "News", "from_address": "news@acme.test", "double_opt_in": False}
    )
    endpoint = await h.client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"})
    assert listed.status_code == 201 and endpoint.status_code == 201
    list_id, endpoint_id = listed.json()["id"], endpoint.json()["id"]
    admin = httpx.AsyncClient(
        base_url=h.platform.api_url,
        headers={
            "Authorization": f"Bearer {(await h.platform.core.admin_keys.create('ops', actor=SYSTEM)).token}"
        },
        timeout=30,
    )
    paged = [
        (h.client, "/v1/events", "e"),
        (h.client, "/v1/suppressions", "s"),
        (h.client, f"/v1/webhooks/{endpoint_id}/deliveries", "d"),
        (admin, "/v1/admin/suppressions", "s"),
    ]
    async with admin:
        for client, path, kind in paged:
            for bad in (
                _cursor(f"{kind}:99999999999999999999"),
                _cursor(f"{kind}:{MAX_ID + 1}"),
                _cursor(f"{kind}:-1"),
                _cursor(f"{kind}:\uff11\uff12"),  # digits, but not ASCII ones
                _cursor(f"{kind}:" + "9" * 5000),
                _cursor("x:1"),
                "!!",
                "%%%",
                base64.urlsafe_b64encode(b"\xff\xfe").decode(),
            ):
                response = await client.get(path, params={"cursor": bad})
                assert response.status_code == 422, (path, bad, response.text)
                assert response.json()["errors"] == [{"field": "cursor", "reason": "malformed"}]
            largest = await client.get(path, params={"cursor": _cursor(f"{kind}:{MAX_ID}")})
            assert largest.status_code == 200 and largest.json()["data"] == []
        contacts = f"/v1/lists/{list_id}/contacts"
        for bad_number in (str(MAX_ID + 1), str(2**64), "-1"):
            assert (await h.client.get(contacts, params={"cursor": bad_number})).status_code == 422
        assert (await h.client.get(contacts, params={"cursor": str(MAX_ID)})).json()["data"] == []


async def test_the_preference_center_ignores_list_numbers_that_name_nothing(h: Harness) -> None:
    listed = await h.client.post(
        "/v1/lists", json={"name": "News", "from_address": "news@acme.test", "double_opt_in": False}
    )
    list_id = listed.json()["id"]
    added = await h.client.post(
        f"/v1/lists/{list_id}/contacts", json={"email": "ana@gmail.test", "consent": {"source": "t"}}
    )
    token = h.platform.core.audience.tokens.preferences(added.json()["contact_id"])
    saved = await h.client.post(f"/p/{token}", data={"list": ["²", str(2**64), "-3", str(list_id)]})
    assert saved.status_code == 200
    contacts = (await h.client.get(f"/v1/lists/{list_id}/contacts")).json()["data"]
    assert [c["status"] for c in contacts] == ["subscribed"]


async def test_times_out_of_range_are_422(h: Harness) -> None:
    listed = await h.client.post(
        "/v1/lists", json={"name": "News", "from_address": "news@acme.test", "double_opt_in": False}
    )
    list_id = listed.json()["id"]
    campaign = await h.client.post(
        "/v1/campaigns", json={"name": "c", "list_id": list_id, "subject": "s", "text": "t"}
    )
    campaign_id = campaign.json()["id"]
    edges = (
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59-05:00",
        "1800-01-01T00:00:00Z",
        "2026-01-01T00:00:00",
    )
    for moment in edges:
        for method, path, field, options in (
            ("GET", "/v1/events", "since", {"params": {"since": moment}}),
            ("GET", "/v1/events", "until", {"params": {"until": moment}}),
            ("GET", "/v1/stats", "from", {"params": {"from": moment}}),
            ("GET", "/v1/stats", "to", {"params": {"to": moment}}),
            ("POST", f"/v1/campaigns/{campaign_id}/schedule", "at", {"json": {"at": moment}}),
            (
                "POST",
                "/v1/campaigns",
                "send_at",
                {"json": {"name": "d", "list_id": list_id, "subject": "s", "text": "t", "send_at": moment}},
            ),
            (
                "POST",
                f"/v1/lists/{list_id}/contacts",
                "consent.at",
                {"json": {"email": "a@gmail.test", "consent": {"source": "t", "at": moment}}},
            ),
        ):
            response = await h.client.request(method, path, **options)
            assert response.status_code == 422, (path, moment, response.text)
            assert field in [e["field"] for e in response.json()["errors"]], (path, response.json())
    fine = await h.client.get("/v1/events", params={"since": "2026-01-01T00:00:00+05:00"})
    assert fine.status_code == 200


async def test_dashboard_pages_refuse_ids_out_of_range(h: Harness) -> None:
    users = h.platform.core.users
    user = await users.create(
        "ops@acme.test",
        "a long enough password",
        operator=True,
        account_id=h.account_id,
        role="owner",
        actor=SYSTEM,
    )
    session = await users.start_session(user, origin="127.0.0.1")
    headers = {"X-CSRF-Token": session.csrf_token}
    async with httpx.AsyncClient(
        base_url=h.platform.api_url, cookies={"estafeta_session": session.cookie}, headers=headers
    ) as browser:
        for n, status in ((2**31, 404), (MAX_ID, 404), (MAX_ID + 1, 422), (2**64, 422), (0, 422)):
            for method, path in (
                ("GET", f"/app/lists/{n}"),
                ("GET", f"/app/campaigns/{n}"),
                ("POST", f"/app/campaigns/{n}/pause"),
                ("GET", f"/app/webhooks/{n}"),
                ("POST", f"/app/webhooks/{n}/deliveries/{n}/replay"),
                ("GET", f"/app/admin/reviews/{n}"),
                ("POST", f"/app/admin/reviews/{n}/approve"),
                ("POST", f"/app/admin/accounts/{n}/plan"),
                ("POST", f"/app/team/invitations/{n}/revoke"),
                ("POST", f"/app/team/members/{n}"),
            ):
                response = await browser.request(method, path, data={"role": "viewer", "plan": "x"})
                assert response.status_code != 500, (method, path, response.text[:300])
                if status == 422:
                    assert response.status_code == 422, (method, path, response.status_code)
        for raw in ("\u00b2", str(2**64), "-1"):
            switched = await browser.post("/app/account", data={"account_id": raw})
            assert switched.status_code == 404, (raw, switched.status_code)
        contacts = await browser.get("/app/lists/1", params={"after": str(2**64)})
        assert contacts.status_code == 422
