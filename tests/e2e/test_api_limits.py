"""Bounded requests: the request-size limit (enforced while the body streams in, before the API key is
checked), the message-size and recipient limits, and one heavy request never holding up the others."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from estafeta.audit import SYSTEM
from estafeta.world import World
from tests.e2e.harness import Harness, start_harness

MIB = 1024 * 1024


@pytest.fixture
async def small(fresh_world: World, tmp_path: Path) -> AsyncIterator[Harness]:
    """A platform with small limits, so that going past them is quick."""
    h = await start_harness(
        fresh_world,
        f"sqlite:///{tmp_path / 'limits.db'}",
        api={"max_request_bytes": MIB, "max_message_bytes": 64 * 1024, "max_recipients": 5},
    )
    yield h
    await h.client.aclose()
    await h.platform.stop(grace=2)


async def _raw_request(h: Harness, head: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = int(h.platform.api_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def test_a_body_declared_too_large_is_refused_unread_before_the_key_is_checked(
    harness: Harness,
) -> None:
    # 90 MiB announced, 64 KiB sent, no API key: the answer comes without the rest being read.
    reader, writer = await _raw_request(
        harness,
        "POST /v1/messages HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        f"Content-Length: {90 * MIB}\r\n\r\n",
    )
    writer.write(b" " * 65536)
    try:
        status, headers, body = await asyncio.wait_for(_response(reader), timeout=20)
    finally:
        writer.close()
    assert status == 413
    assert headers["content-type"] == "application/problem+json"
    assert "api.max_request_bytes" in json.loads(body)["detail"]


async def test_a_streamed_body_is_refused_as_soon_as_it_passes_the_limit(small: Harness) -> None:
    reader, writer = await _raw_request(
        small,
        "POST /v1/messages HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {small.token}\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    answer = asyncio.create_task(_response(reader))
    sent = 0
    chunk = b" " * 65536
    try:
        while not answer.done() and sent < 90 * MIB:
            try:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
            except ConnectionError:
                break  # the server answered and closed: the rest is never read
            sent += len(chunk)
            await asyncio.sleep(0.001)
        status, headers, body = await asyncio.wait_for(answer, timeout=20)
    finally:
        writer.close()
    assert status == 413 and headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 413
    assert sent < 8 * MIB  # refused at the 1 MiB limit, far from the 90 MiB offered


async def test_the_message_size_limit_holds_before_and_after_composing(small: Harness) -> None:
    h = small
    message = {"from": "hello@acme.test", "to": ["ana@gmail.test"], "subject": "Big"}
    too_long = await h.client.post("/v1/messages", json={**message, "text": "x" * 70_000})
    assert too_long.status_code == 413
    problem = too_long.json()
    assert problem["type"] == "/problems/message-too-large" and "api.max_message_bytes" in problem["detail"]
    # Under the limit as text, over it once encoded (quoted-printable triples every byte of these).
    encoded = await h.client.post("/v1/messages", json={**message, "text": "\u00e9" * 30_000})
    assert encoded.status_code == 413
    batch = await h.client.post(
        "/v1/messages", json={"messages": [{**message, "text": "fine"}, {**message, "html": "y" * 70_000}]}
    )
    assert batch.status_code == 413 and batch.json()["errors"][0]["field"] == "messages[1]"
    assert (await h.client.get("/v1/events")).json()["data"] == []  # all or nothing
    assert (await h.client.post("/v1/messages", json={**message, "text": "x" * 20_000})).status_code == 202


async def test_the_default_limits_refuse_an_oversized_text(harness: Harness) -> None:
    """26 MiB of text fits in a request (32 MiB) but not in a message (25 MiB)."""
    response = await harness.client.post(
        "/v1/messages",
        json={"from": "hello@acme.test", "to": ["ana@gmail.test"], "text": "x" * (26 * MIB)},
    )
    assert response.status_code == 413 and response.json()["type"] == "/problems/message-too-large"


async def test_recipients_per_message_are_limited_before_they_are_parsed(small: Harness) -> None:
    h = small
    to = [f"u{i}@gmail.test" for i in range(4)]
    over = await h.client.post(
        "/v1/messages",
        json={
            "from": "hello@acme.test",
            "to": to,
            "cc": ["c@gmail.test"],
            "bcc": ["not an address"],
            "text": "t",
        },
    )
    assert over.status_code == 422
    assert over.json()["errors"] == [
        {"field": "to", "reason": "at most 5 recipients (to, cc and bcc together) per message; got 6"}
    ]
    within = await h.client.post(
        "/v1/messages", json={"from": "hello@acme.test", "to": to, "cc": ["c@gmail.test"], "text": "t"}
    )
    assert within.status_code == 202 and len(within.json()["messages"][0]["recipients"]) == 5


async def test_a_heavy_request_does_not_hold_up_light_ones(harness: Harness) -> None:
    """While batches of 10,000 recipients are checked, composed and signed, other requests are answered:
    several of them complete while the batches are being accepted (were a batch's work done on the event
    loop, none would; a batch takes about a second on a 2-core machine, a light request tens of ms)."""
    h = harness
    accepted = h.platform.core.metrics.accepted_messages.labels("api")
    batch = {
        "messages": [
            {
                "from": "hello@acme.test",
                "to": [f"user{m}.{r}@gmail.test" for r in range(100)],
                "subject": f"Heavy {m}",
                "text": "Hello.\n" * 200,
            }
            for m in range(100)
        ]
    }

    async def heavy_batches() -> list[int]:
        return [(await h.client.post("/v1/messages", json=batch, timeout=300)).status_code for _ in range(3)]

    heavy = asyncio.create_task(heavy_batches())
    while_heavy = 0
    async with httpx.AsyncClient(base_url=h.platform.api_url, headers=h.client.headers, timeout=300) as light:
        await light.get("/v1/account/reputation")  # the key is checked once and remembered
        while not heavy.done():
            response = await light.get("/v1/account/reputation")
            assert response.status_code == 200
            if accepted._value.get() < 300 and not heavy.done():
                while_heavy += 1
    assert await heavy == [202, 202, 202]
    assert accepted._value.get() == 300
    assert while_heavy >= 5, while_heavy


async def test_large_bodies_get_the_answers_small_ones_get(harness: Harness) -> None:
    """Large bodies are parsed and validated on worker threads, small ones in place: the answers are the
    same problems, naming the same fields."""
    h = harness

    def message(i: int, to: list[str] | None = None) -> dict[str, object]:
        addresses = to if to is not None else [f"user{i}.{r}@gmail.test" for r in range(100)]
        return {"from": "hello@acme.test", "to": addresses, "text": "Hello.\n" * 200}

    small = json.dumps(message(0, ["a@gmail.test"]))
    large = json.dumps({"messages": [message(i) for i in range(40)]})
    assert len(small) < 64 * 1024 < len(large)

    async def post(body: bytes) -> httpx.Response:
        response = await h.client.post(
            "/v1/messages", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.headers["content-type"] == "application/problem+json", response.text
        return response

    for body in (small, large):
        malformed = await post(f"{body}}}".encode())  # where the extra brace is, as the parser says
        assert malformed.status_code == 422
        assert malformed.json()["type"] == "/problems/invalid-request"
        broken = f"invalid JSON at line 1, column {len(body) + 1}: Extra data"
        assert malformed.json()["errors"] == [{"field": "body", "reason": broken}]
        assert malformed.json()["detail"] == f"body: {broken}"
        not_utf8 = await post(body.encode()[:-3] + b"\xff]}")
        assert (not_utf8.status_code, not_utf8.json()["detail"]) == (
            400,
            "There was an error parsing the body",
        )
    lines = await post(b'{\n  "from": "hello@acme.test"\n  "to": ["a@gmail.test"]\n}')
    assert lines.json()["errors"] == [
        {"field": "body", "reason": "invalid JSON at line 3, column 3: Expecting ',' delimiter"}
    ]
    bad = await post(
        json.dumps({"messages": [*(message(i) for i in range(39)), message(39, ["nope"])]}).encode()
    )
    assert bad.status_code == 422 and [e["field"] for e in bad.json()["errors"]] == ["messages[39].to[0]"]
    unknown = await post(json.dumps({"messages": [*(message(i) for i in range(39)), {"bogus": 1}]}).encode())
    assert unknown.status_code == 422
    assert {e["field"] for e in unknown.json()["errors"]} == {"messages[39].from", "messages[39].bogus"}
    over = await post(json.dumps({"messages": [message(i, ["a@gmail.test"]) for i in range(501)]}).encode())
    assert over.json()["detail"] == "a batch holds at most 500 messages; got 501"

    accepted = await h.client.post(
        "/v1/messages", content=large, headers={"Content-Type": "application/json"}
    )
    assert accepted.status_code == 202 and accepted.headers["content-type"] == "application/json"
    answer = accepted.json()["messages"]
    assert len(answer) == 40 and answer[0]["recipients"][0] == {
        "email": "user0.0@gmail.test",
        "state": "queued",
        "attempts": 0,
        "next_attempt_at": None,
        "last_code": None,
        "last_reply": None,
        "reason": None,
    }


async def test_each_account_has_a_request_rate_and_is_told_when_to_come_back(
    fresh_world: World, tmp_path: Path
) -> None:
    h = await start_harness(
        fresh_world, f"sqlite:///{tmp_path / 'rate.db'}", api={"rate_per_second": 2, "rate_burst": 3}
    )
    try:
        statuses = [(await h.client.get("/v1/stats")).status_code for _ in range(3)]
        refused = await h.client.get("/v1/stats")
        assert statuses == [200, 200, 200]
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["type"] == "/problems/rate-limit"
        assert "2 requests per second" in refused.json()["detail"]
        other = await h.platform.core.accounts.create("globex", actor=SYSTEM)
        token = (await h.platform.core.api_keys.create(other.id, "tests", actor=SYSTEM)).token
        elsewhere = await h.client.get("/v1/stats", headers={"Authorization": f"Bearer {token}"})
        assert elsewhere.status_code == 200  # another account's requests are counted apart
        h.clock.advance(0.5)
        assert (await h.client.get("/v1/stats")).status_code == 200
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)


async def test_requests_wait_with_503_while_shared_limits_cannot_be_checked(
    fresh_world: World, tmp_path: Path
) -> None:
    h = await start_harness(
        fresh_world,
        f"sqlite:///{tmp_path / 'down.db'}",
        api={"rate_per_second": 100},
        redis={"url": "redis://127.0.0.1:1/0", "timeout": 0.5},
    )
    try:
        response = await h.client.get("/v1/stats")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == "application/problem+json"
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=2)
