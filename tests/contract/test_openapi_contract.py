"""The OpenAPI document is the contract: every operation, fuzzed against the live server.

Schemathesis generates requests from `/openapi.json` (valid ones and, in its coverage phase, invalid ones)
and runs all its checks on each answer: no 5xx, every status code and content type documented, bodies
matching their schemas, valid requests accepted and invalid ones refused, `Allow` on 405 and more.
Examples are bounded and derandomized so that the run is the same on every machine.

The document names string formats of its own (`estafeta.api.params`); the strategies below say what valid
values look like on this platform, whose account sends from acme.test.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from schemathesis.specs.openapi.schemas import OpenApiSchema

from estafeta.api.params import ADDRESS_OR_DOMAIN, IP_POOL, SENDER_ADDRESS, SENDING_DOMAIN, SUPPRESSION_CSV
from tests.contract.conftest import LiveApi

MAX_EXAMPLES = 5

_LABEL = st.from_regex(r"[a-z0-9]{1,10}(-[a-z0-9]{1,10})?", fullmatch=True)  # no `ab--`: IDNA reserves it
_DOMAINS = st.builds(
    lambda labels, top: ".".join([*labels, top]),
    st.lists(_LABEL, min_size=1, max_size=3),
    st.sampled_from(["com", "org", "net", "test", "de"]),
)
_LOCAL = st.from_regex(r"[a-z0-9]+([._+-][a-z0-9]+)*", fullmatch=True)
_ADDRESSES = st.builds("{}@{}".format, _LOCAL, _DOMAINS)
_SENDING_DOMAINS = st.sampled_from(["acme.test", "ed.acme.test"])

schemathesis.openapi.format("email", _ADDRESSES)
schemathesis.openapi.format(ADDRESS_OR_DOMAIN, _ADDRESSES | _DOMAINS)
schemathesis.openapi.format(
    SUPPRESSION_CSV, st.lists(_ADDRESSES | _DOMAINS, max_size=5).map(lambda rows: "\n".join(["value", *rows]))
)
schemathesis.openapi.format(SENDING_DOMAIN, _SENDING_DOMAINS)
schemathesis.openapi.format(SENDER_ADDRESS, st.builds("{}@{}".format, _LOCAL, _SENDING_DOMAINS))
schemathesis.openapi.format(IP_POOL, st.just(""))  # the platform has no pools: only the default


@schemathesis.serializer("message/rfc822", "text/plain")
def _text(_: Any, value: Any) -> bytes | None:
    """A text body as it is; a value of another type (a negative case) as no body at all."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else None


# Requests that match the document but that the server refuses, rightly, for reasons JSON Schema cannot
# say: a rule across fields or the state of the account. Each is a precise 422; the other checks still run.
BEYOND_THE_SCHEMA = {
    "POST /v1/messages": "a message needs a recipient and a body (to/cc/bcc, text/html)",
    "GET /v1/stats": "`from` must come before `to`",
    "POST /v1/lists/{list_id}/imports": "the CSV's header row must name an `email` column",
    "POST /v1/lists/{list_id}/segments": "a condition's operator decides whether it takes a value",
    "POST /v1/campaigns": "the segment must belong to the campaign's list",
    # `format: uri` allows hosts no resolver takes (labels over 63 characters, names over 253).
    "POST /v1/webhooks": "the URL's host must be a usable host name or address",
    "PATCH /v1/webhooks/{endpoint_id}": "the URL's host must be a usable host name or address",
}


@pytest.fixture(scope="module")
def api_schema(live_api: LiveApi) -> OpenApiSchema:
    return schemathesis.openapi.from_url(f"{live_api.url}/openapi.json", timeout=120)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.timeout(1800)  # one test with a subtest per operation: the whole run
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_keeps_the_contract(case: Case, live_api: LiveApi) -> None:
    """Where the case carries credentials, they are real ones (an admin key on admin routes); where it
    leaves them out on purpose, the request goes without."""
    if case.headers is not None and "Authorization" in case.headers:
        key = live_api.admin_key if case.path.startswith("/v1/admin/") else live_api.account_key
        case.headers["Authorization"] = f"Bearer {key}"
    beyond = case.operation.label in BEYOND_THE_SCHEMA
    # The coverage phase can vary a valid path parameter while the body keeps a wrong type from a negative
    # scenario (`-d 0` for an object): the case is negative as a whole, so it is not held to acceptance.
    negative = case.meta is not None and case.meta.generation.mode is GenerationMode.NEGATIVE
    excluded = [positive_data_acceptance] if beyond or negative else []
    live_api.statuses.append(case.call_and_validate(excluded_checks=excluded).status_code)


def test_the_fuzzer_reached_the_server(live_api: LiveApi) -> None:
    """Most answers are not 401: the fuzzer got past authentication, so the checks above tested something."""
    assert live_api.statuses, "no request was sent"
    authenticated = [s for s in live_api.statuses if s != 401]
    assert len(authenticated) > len(live_api.statuses) / 2, sorted(set(live_api.statuses))
