"""The OpenAPI document tells the truth about the server: one regression test for each kind of mismatch
the contract fuzzer (tests/contract) found."""

from __future__ import annotations

import base64
import re
from typing import Any

from pydantic import TypeAdapter, ValidationError

from estafeta.api.params import Moment, cursor_pattern, encode_cursor
from estafeta.api.problems import COMMON_STATUSES, PROBLEM
from estafeta.store.models import MAX_ID
from tests.e2e.harness import Harness


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


async def test_every_operation_documents_its_problems_and_every_reference_resolves(harness: Harness) -> None:
    doc = (await harness.client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert {"Problem", "MessageIn", "BatchIn"} <= set(schemas)
    assert {ref.removeprefix("#/components/schemas/") for ref in _refs(doc)} <= set(schemas)
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for status in COMMON_STATUSES:
                content = operation["responses"][str(status)].get("content", {})
                if path == "/u/{token}" and method == "post" and status in (400, 404):
                    assert "text/plain" in content  # the one-click answer is for machines, in plain text
                    continue
                if path.startswith(("/u/", "/p/", "/f/", "/confirm/")) and status == 404:
                    assert "text/html" in content, (method, path)  # pages for people
                    continue
                assert content[PROBLEM]["schema"] == {"$ref": "#/components/schemas/Problem"}, (method, path)
    created = doc["paths"]["/v1/suppressions"]["post"]["responses"]
    assert "201" in created and "200" in created


async def test_405_names_every_method_of_the_resource(harness: Harness) -> None:
    for path, methods in [
        ("/v1/lists", {"GET", "POST"}),
        ("/v1/webhooks/1", {"GET", "PATCH", "DELETE"}),
        ("/v1/messages/cancel", {"POST"}),  # not GET /v1/messages/{message_id}
    ]:
        response = await harness.client.options(path)
        assert response.status_code == 405
        assert set(response.headers["allow"].split(", ")) == methods, path
        assert response.headers["content-type"] == PROBLEM


async def test_documented_inputs_are_accepted_and_others_refused(harness: Harness) -> None:
    client = harness.client
    # A number is not a time, however pydantic would read it.
    assert (await client.get("/v1/events", params={"until": "0.5"})).status_code == 422
    assert (await client.get("/v1/stats", params={"from": "0.5"})).status_code == 422
    # A boolean is true or false, not 0.
    tracking = {"clicks": 0, "opens": False}
    assert (await client.put("/v1/tracking/transactional", json=tracking)).status_code == 422
    # An empty cursor, an unknown reason, an empty message: refused, not ignored.
    assert (await client.get("/v1/events", params={"cursor": ""})).status_code == 422
    assert (await client.get("/v1/suppressions", params={"reason": "null"})).status_code == 422
    lint = await client.post("/v1/lint", headers={"content-type": "message/rfc822"})
    assert lint.status_code == 422
    assert lint.json()["errors"] == [{"field": "body", "reason": "empty"}]
    # Only an end is given: the period ends there, with the default length.
    stats = await client.get("/v1/stats", params={"to": "2000-01-02T00:00:00Z"})
    assert stats.status_code == 200, stats.text
    assert stats.json()["from"].startswith("1999-12-")
    # A new suppression is 201, as documented; the same again is 200.
    first = await client.post("/v1/suppressions", json={"address": "someone@example.com"})
    again = await client.post("/v1/suppressions", json={"address": "someone@example.com"})
    assert (first.status_code, again.status_code) == (201, 200)


def test_a_time_is_written_as_a_date_with_a_year_from_1900_to_9998() -> None:
    moment = TypeAdapter(Moment)
    assert moment.validate_python("1900-01-01T00:00:00+05:00").year == 1899  # in UTC
    assert moment.validate_python("9998-12-31T23:00:00-05:00").year == 9999
    for bad in ("0.5", "1767225600", 1767225600, "1899-12-31T23:00:00Z", "2026-01-01T00:00:00"):
        try:
            moment.validate_python(bad)
        except ValidationError:
            continue
        raise AssertionError(f"{bad!r} was accepted")


def test_the_documentedcursor_pattern_matches_exactly_what_the_api_hands_out() -> None:
    for kind in "eds":
        pattern = re.compile(cursor_pattern(kind))
        for n in (1, 9, 10, 99, 123, 4567, 10**9, 2**40 + 7, 10**17, MAX_ID):
            assert pattern.fullmatch(encode_cursor(n, kind)), (kind, n)
        for text in (f"{kind}:", f"{kind}:{'9' * 20}", f"{kind}:-1", "x:1", f"{kind}:1a"):
            assert not pattern.fullmatch(base64.urlsafe_b64encode(text.encode()).decode().rstrip("="))
        assert not pattern.fullmatch(encode_cursor(1, "x"))
