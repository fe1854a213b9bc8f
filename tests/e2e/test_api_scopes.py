"""Scoped API keys: send-only, read-only and full keys each do what their scope allows and get a 403 naming
the missing scope otherwise; keys are created, listed and revoked through the API."""

from __future__ import annotations

import httpx

from tests.e2e.harness import Harness

MESSAGE = {"from": "hello@acme.test", "to": ["someone@gmail.test"], "subject": "Hi", "text": "Hello.\n"}


def _client(h: Harness, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=h.platform.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


async def _key(h: Harness, scope: str) -> str:
    response = await h.client.post("/v1/api-keys", json={"name": f"{scope} key", "scope": scope})
    assert response.status_code == 201, response.text
    assert response.json()["scope"] == scope
    return str(response.json()["token"])


async def test_each_scope_allows_what_it_names_and_names_what_is_missing(harness: Harness) -> None:
    send, read = await _key(harness, "send"), await _key(harness, "read")
    async with _client(harness, send) as sender, _client(harness, read) as reader:
        assert (await sender.post("/v1/messages", json=MESSAGE)).status_code == 202
        for refused in (await sender.get("/v1/events"), await sender.post("/v1/lists", json={"name": "n"})):
            assert refused.status_code == 403
            assert refused.headers["content-type"] == "application/problem+json"
            assert "scope is `send`" in refused.json()["detail"]
        assert (await reader.get("/v1/events")).status_code == 200
        assert (await reader.get("/v1/account/reputation")).status_code == 200
        refused = await reader.post("/v1/messages", json=MESSAGE)
        assert refused.status_code == 403
        assert "needs the `send` scope" in refused.json()["detail"]
        # Credentials and endpoints carry secrets: even reading them needs a full key.
        for path in ("/v1/webhooks", "/v1/smtp-credentials", "/v1/api-keys"):
            assert (await reader.get(path)).status_code == 403, path
            assert "needs the `full` scope" in (await reader.get(path)).json()["detail"]
        assert (await harness.client.get("/v1/webhooks")).status_code == 200


async def test_keys_are_listed_without_secrets_and_revoked_at_once(harness: Harness) -> None:
    token = await _key(harness, "read")
    prefix = token.split("_")[1]
    listed = (await harness.client.get("/v1/api-keys")).json()["data"]
    assert {k["prefix"]: k["scope"] for k in listed}[prefix] == "read"
    assert all("token" not in k and "secret_hash" not in k for k in listed)
    async with _client(harness, token) as reader:
        assert (await reader.get("/v1/events")).status_code == 200
        assert (await harness.client.delete(f"/v1/api-keys/{prefix}")).status_code == 204
        assert (await reader.get("/v1/events")).status_code == 401
    assert (await harness.client.delete(f"/v1/api-keys/{prefix}")).status_code == 404
    revoked = {
        k["prefix"]: k["revoked_at"] for k in (await harness.client.get("/v1/api-keys")).json()["data"]
    }
    assert revoked[prefix] is not None
    assert (await harness.client.post("/v1/api-keys", json={"scope": "admin"})).status_code == 422


async def test_the_key_and_its_scope_are_checked_before_the_body_is_read(harness: Harness) -> None:
    """A request without a valid key, or with a key whose scope does not cover the route, is refused before
    its body is read: a large body that would not parse gets the 401 or 403, never the malformed-JSON 422."""
    malformed = b'{"to": [' + b'"x@gmail.test", ' * 8192 + b"}"
    assert len(malformed) > 64 * 1024
    document = (await harness.client.get("/openapi.json")).json()
    routes = [
        (method.upper(), path.replace("{", "").replace("}", ""))
        for path, operations in document["paths"].items()
        if path.startswith("/v1/")
        for method in operations
        if method != "get"
    ]
    assert len(routes) > 30
    headers = {"Content-Type": "application/json"}
    read = await _key(harness, "read")
    async with (
        _client(harness, "est_unknown") as stranger,
        _client(harness, read) as reader,
        httpx.AsyncClient(base_url=harness.platform.api_url, timeout=60) as anonymous,
    ):
        for method, path in routes:
            for client, status in ((anonymous, 401), (stranger, 401), (reader, 403)):
                refused = await client.request(method, path, content=malformed, headers=headers)
                assert refused.status_code == status, (method, path, refused.text)
                assert refused.headers["content-type"] == "application/problem+json"
        accepted = await harness.client.post("/v1/messages", content=malformed, headers=headers)
        assert accepted.status_code == 422
