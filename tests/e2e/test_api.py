"""The HTTP API's contract: authentication, account scoping, precise errors, events and pagination."""

from __future__ import annotations

import httpx

from estafeta import __version__
from tests.e2e.harness import Harness
from tests.factories import add_sender


async def test_the_liveness_answer_names_the_service(harness: Harness) -> None:
    """A load balancer's probe needs no key, and can tell Estafeta from another program on the port."""
    async with httpx.AsyncClient(base_url=harness.platform.api_url) as anonymous:
        response = await anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "estafeta", "version": __version__}


async def test_requests_without_a_valid_key_are_refused(harness: Harness) -> None:
    async with httpx.AsyncClient(base_url=harness.platform.api_url) as anonymous:
        for headers in ({}, {"Authorization": "Bearer est_nope_nope"}, {"Authorization": "Bearer garbage"}):
            response = await anonymous.post("/v1/messages", json={}, headers=headers)
            assert response.status_code == 401
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["status"] == 401


async def test_invalid_messages_name_the_field_and_the_reason(harness: Harness) -> None:
    response = await harness.client.post(
        "/v1/messages",
        json={
            "messages": [
                {"from": "hello@acme.test", "to": ["ok@gmail.test"], "text": "fine"},
                {"from": "not an address", "to": ["also bad@"], "text": "x", "headers": {"Bcc": "x@y.test"}},
            ]
        },
    )
    assert response.status_code == 422
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    fields = {e["field"] for e in problem["errors"]}
    assert {"messages[1].from", "messages[1].to[0]"} <= fields
    assert all(e["reason"] for e in problem["errors"])
    # all or nothing: the valid first message was not queued either
    events = await harness.client.get("/v1/events")
    assert events.json()["data"] == []


async def test_schema_errors_and_reserved_headers(harness: Harness) -> None:
    missing = await harness.client.post("/v1/messages", json={"to": ["a@gmail.test"], "text": "x"})
    assert missing.status_code == 422
    assert {"field": "from", "reason": "Field required"} in missing.json()["errors"]
    unknown = await harness.client.post(
        "/v1/messages",
        json={"from": "hello@acme.test", "to": ["a@gmail.test"], "text": "x", "stream": "promo"},
    )
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "stream"
    injected = await harness.client.post(
        "/v1/messages",
        json={
            "from": "hello@acme.test",
            "to": ["a@gmail.test"],
            "text": "x",
            "headers": {"X-Note": "hi\r\nBcc: victim@gmail.test"},
        },
    )
    assert injected.status_code == 422 and "headers" in injected.json()["errors"][0]["field"]
    reserved = await harness.client.post(
        "/v1/messages",
        json={
            "from": "hello@acme.test",
            "to": ["a@gmail.test"],
            "text": "x",
            "headers": {"DKIM-Signature": "v=1"},
        },
    )
    assert reserved.status_code == 422 and "DKIM-Signature" in reserved.json()["detail"]
    no_body = await harness.client.post(
        "/v1/messages", json={"from": "hello@acme.test", "to": ["a@gmail.test"]}
    )
    assert no_body.status_code == 422 and no_body.json()["errors"][0]["field"] == "text"
    surrogate = await harness.client.post(  # JSON may escape a lone surrogate; no UTF-8 text can hold one
        "/v1/messages",
        content=b'{"from": "hello@acme.test", "to": ["a@gmail.test"], "subject": "bad \\ud800", "text": "x"}',
        headers={"Content-Type": "application/json"},
    )
    assert surrogate.status_code == 422 and surrogate.json()["errors"][0]["field"] == "subject"
    not_json = await harness.client.post(
        "/v1/messages", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 422


async def test_sending_from_a_domain_the_account_does_not_own_is_forbidden(harness: Harness) -> None:
    await add_sender(harness.platform.core, "globex", "globex.test")
    for sender in ("ceo@globex.test", "ceo@unregistered.test"):
        response = await harness.client.post(
            "/v1/messages", json={"from": sender, "to": ["a@gmail.test"], "text": "x"}
        )
        assert response.status_code == 403
        assert response.json()["errors"][0]["field"] == "from"


async def test_messages_and_events_are_scoped_to_the_account(harness: Harness) -> None:
    message_id = await harness.send(to=["ana@gmail.test"])
    await harness.wait_state(message_id, "delivered")
    key = (await add_sender(harness.platform.core, "globex")).token
    async with httpx.AsyncClient(
        base_url=harness.platform.api_url, headers={"Authorization": f"Bearer {key}"}
    ) as intruder:
        assert (await intruder.get(f"/v1/messages/{message_id}")).status_code == 404
        assert (await intruder.get("/v1/events")).json()["data"] == []
    assert (await harness.client.get("/v1/messages/msg_doesnotexist")).status_code == 404


async def test_events_filter_and_paginate_with_a_cursor(harness: Harness) -> None:
    response = await harness.client.post(
        "/v1/messages",
        json={
            "messages": [
                {"from": "hello@acme.test", "to": [f"u{i}@outlook.test"], "text": "t"} for i in range(5)
            ]
        },
    )
    ids = [m["id"] for m in response.json()["messages"]]
    for message_id in ids:
        await harness.wait_state(message_id, "delivered")
    seen: list[int] = []
    cursor = None
    while True:
        params = {"type": "delivered", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await harness.client.get("/v1/events", params=params)).json()
        seen.extend(e["id"] for e in page["data"])
        assert all(e["type"] == "delivered" for e in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and seen == sorted(seen)
    one = (await harness.client.get("/v1/events", params={"message_id": ids[0]})).json()["data"]
    assert [e["type"] for e in one] == ["accepted", "queued", "delivered"]
    by_rcpt = (await harness.client.get("/v1/events", params={"recipient": "u3@outlook.test"})).json()["data"]
    assert {e["message_id"] for e in by_rcpt} == {ids[3]}
    bad = await harness.client.get("/v1/events", params={"type": "exploded"})
    assert bad.status_code == 422
    bad_cursor = await harness.client.get("/v1/events", params={"cursor": "!!"})
    assert bad_cursor.status_code == 422


async def test_openapi_is_served(harness: Harness) -> None:
    spec = (await harness.client.get("/openapi.json")).json()
    assert "/v1/messages" in spec["paths"] and "/v1/events" in spec["paths"]
    assert (await harness.client.get("/docs")).status_code == 200
