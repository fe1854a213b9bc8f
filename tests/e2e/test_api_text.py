"""Text fields that end up in headers or one-line displays are refused with 422 when they carry control
characters or line breaks; notes and answers may span lines but carry no other control characters."""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx

from estafeta.audit import SYSTEM
from estafeta.store import audience as audience_store
from tests.e2e.harness import Harness

ONE_LINE_BAD = ("news\u0005letter", "news\nletter", "news\u2028letter", "tab\there", "lone \ud800")
FREE_TEXT_BAD = ("bell\u0007", "escape \u001b[31m", "nul\u0000")


async def _list(h: Harness) -> int:
    response = await h.client.post(
        "/v1/lists", json={"name": f"List {secrets.token_hex(3)}", "from_address": "news@acme.test"}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def _refused(client: httpx.AsyncClient, method: str, path: str, field: str, **options: Any) -> None:
    if "json" in options:  # escaped as JSON allows, so that a lone surrogate can be sent
        options["content"] = json.dumps(options.pop("json")).encode()
        options["headers"] = {"content-type": "application/json"}
    if any(not str(v).isascii() and "\ud800" in str(v) for v in options.get("params", {}).values()):
        return  # a query string is UTF-8: it cannot carry a lone surrogate at all
    response = await client.request(method, path, **options)
    assert response.status_code == 422, (path, field, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]], (path, response.json())


async def test_one_line_fields_refuse_control_characters_and_line_breaks(harness: Harness) -> None:
    h = harness
    list_id = await _list(h)
    campaign = {"name": "c", "list_id": list_id, "subject": "s", "text": "t"}
    message = {"from": "hello@acme.test", "to": ["a@gmail.test"], "text": "t"}
    for bad in ONE_LINE_BAD:
        cases: list[tuple[str, str, str, dict[str, Any]]] = [
            ("POST", "/v1/lists", "name", {"json": {"name": bad, "from_address": "news@acme.test"}}),
            (
                "POST",
                "/v1/lists",
                "from_address",
                {"json": {"name": "L", "from_address": f"{bad} <news@acme.test>"}},
            ),
            (
                "POST",
                f"/v1/lists/{list_id}/contacts",
                "consent.source",
                {"json": {"email": "a@gmail.test", "consent": {"source": bad}}},
            ),
            (
                "POST",
                f"/v1/lists/{list_id}/imports",
                "consent_source",
                {
                    "params": {"consent_source": bad},
                    "content": b"email\na@gmail.test\n",
                    "headers": {"content-type": "text/csv"},
                },
            ),
            (
                "POST",
                f"/v1/lists/{list_id}/segments",
                "name",
                {"json": {"name": bad, "conditions": [{"attribute": "a", "op": "exists"}]}},
            ),
            ("POST", "/v1/campaigns", "name", {"json": {**campaign, "name": bad}}),
            ("POST", "/v1/campaigns", "subject", {"json": {**campaign, "subject": bad}}),
            ("POST", "/v1/campaigns", "from", {"json": {**campaign, "from": f"{bad} <news@acme.test>"}}),
            ("POST", "/v1/campaigns", "reply_to", {"json": {**campaign, "reply_to": f"{bad} <r@acme.test>"}}),
            ("PUT", "/v1/streams/broadcast", "from_domain", {"json": {"from_domain": bad}}),
            ("PUT", "/v1/streams/broadcast", "ip_pool", {"json": {"ip_pool": bad}}),
            (
                "POST",
                "/v1/webhooks",
                "description",
                {"json": {"url": "http://127.0.0.1:9/", "description": bad}},
            ),
            ("POST", "/v1/suppressions", "address", {"json": {"address": bad}}),
            ("POST", "/v1/messages", "tags[0]", {"json": {**message, "tags": [bad]}}),
        ]
        for method, path, field, options in cases:
            await _refused(h.client, method, path, field, **options)
    hook = await h.client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/", "description": "Orders"})
    assert hook.status_code == 201
    await _refused(
        h.client, "PATCH", f"/v1/webhooks/{hook.json()['id']}", "description", json={"description": "a\u0005"}
    )
    admin = httpx.AsyncClient(
        base_url=h.platform.api_url,
        headers={
            "Authorization": f"Bearer {(await h.platform.core.admin_keys.create('ops', actor=SYSTEM)).token}"
        },
    )
    async with admin:
        await _refused(
            admin,
            "POST",
            f"/v1/admin/accounts/{h.account_id}/streams",
            "reason",
            json={"stream": "broadcast", "state": "paused", "reason": "line\nbreak"},
        )


async def test_notes_and_answers_may_span_lines_but_carry_no_other_control_characters(
    harness: Harness,
) -> None:
    h = harness
    answers = {"collection": "signup form", "consent": "checkbox", "content": "news", "frequency": "weekly"}
    for bad in FREE_TEXT_BAD:
        await _refused(
            h.client, "POST", "/v1/account/review-answers", "consent", json={**answers, "consent": bad}
        )
        await _refused(
            h.client, "POST", "/v1/suppressions", "note", json={"address": "x@gmail.test", "note": bad}
        )
        await _refused(h.client, "DELETE", "/v1/suppressions/x@gmail.test", "note", params={"note": bad})
        list_id = await _list(h)
        await _refused(
            h.client,
            "POST",
            f"/v1/lists/{list_id}/contacts",
            "attributes.city",
            json={"email": "a@gmail.test", "attributes": {"city": bad}, "consent": {"source": "t"}},
        )
    kept = await h.client.post(
        "/v1/suppressions", json={"address": "x@gmail.test", "note": "asked by phone,\nticket 42\tclosed"}
    )
    assert kept.status_code == 201


async def test_a_list_name_is_checked_and_its_contacts_get_their_confirmation(harness: Harness) -> None:
    h = harness
    refused = await h.client.post(
        "/v1/lists", json={"name": "news\u0005letter", "from_address": "news@acme.test"}
    )
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "name"
    # A list named before names were checked still works: its confirmation subject is put on one line.
    legacy = h.platform.core.db.call(
        audience_store.create_list,
        h.account_id,
        "old\u0005list",
        "legacy",
        "news@acme.test",
        True,
        h.clock.now(),
    )
    added = await h.client.post(
        f"/v1/lists/{legacy.id}/contacts", json={"email": "ana@gmail.test", "consent": {"source": "t"}}
    )
    assert added.status_code == 201 and added.json()["status"] == "unconfirmed"
    accepted = (await h.client.get("/v1/events", params={"type": "accepted"})).json()["data"]
    assert len(accepted) == 1  # the confirmation mail
    view = await h.message(accepted[0]["message_id"])
    assert view["subject"] == "Confirm your subscription to old list"
