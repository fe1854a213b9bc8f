"""`/v1/webhooks`: endpoints that receive the account's events, their delivery log, replay and a test."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from estafeta.api.deps import account_id, platform
from estafeta.api.events import decode_cursor, encode_cursor
from estafeta.api.problems import Problem
from estafeta.config import WebhookSettings
from estafeta.platform import Platform
from estafeta.public_http import private_target
from estafeta.store import webhooks as store
from estafeta.webhooks import TEST_EVENT, new_secret, test_payload

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

EVENT_TYPE = re.compile(r"\*|[a-z][a-z0-9_.]{0,39}")


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return url


def check_reachable(url: str, settings: WebhookSettings) -> None:
    """Refuse a URL into a private network unless the platform allows such endpoints (see public_http)."""
    if not settings.allow_private_addresses and (reason := private_target(url)):
        raise ValueError(
            f"{reason}; endpoints must be on the public internet (webhooks.allow_private_addresses is off)"
        )


def _reachable(url: str | None, plat: Platform) -> None:
    if url is None:
        return
    try:
        check_reachable(url, plat.settings.webhooks)
    except ValueError as exc:
        raise Problem(422, f"url: {exc}", errors=[{"field": "url", "reason": str(exc)}]) from exc


def check_event_types(types: list[str]) -> list[str]:
    bad = [t for t in types if not EVENT_TYPE.fullmatch(t)]
    if bad:
        raise ValueError(f"not event type names: {', '.join(bad)}")
    return sorted(set(types))


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2000, description="where events are POSTed")
    event_types: list[str] = Field(
        default_factory=list, max_length=50, description='types to send; empty or ["*"]: every type'
    )
    description: str = Field("", max_length=200)
    enabled: bool = True

    _url = field_validator("url")(check_url)
    _types = field_validator("event_types")(check_event_types)


class EndpointPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(None, max_length=2000)
    event_types: list[str] | None = Field(None, max_length=50)
    description: str | None = Field(None, max_length=200)
    enabled: bool | None = None
    rotate_secret: bool = Field(False, description="replace the signing secret (the old one stops at once)")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        return None if url is None else check_url(url)

    @field_validator("event_types")
    @classmethod
    def _types(cls, types: list[str] | None) -> list[str] | None:
        return None if types is None else check_event_types(types)


class EndpointOut(BaseModel):
    id: int
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    secret: str = Field(description="verifies the `webhook-signature` header (Standard Webhooks)")
    created_at: datetime
    updated_at: datetime


class EndpointList(BaseModel):
    data: list[EndpointOut]


class DeliveryOut(BaseModel):
    id: int
    event_id: int | None
    event_type: str
    message_id: str | None
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None = Field(description="HTTP status of the last attempt")
    last_error: str | None
    response_snippet: str | None = Field(description="start of the last response body")
    created_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None


class DeliveryDetail(DeliveryOut):
    payload: dict[str, Any] = Field(description="the JSON body sent")


class DeliveryPage(BaseModel):
    data: list[DeliveryOut]
    next_cursor: str | None


def endpoint_out(row: store.EndpointRow) -> EndpointOut:
    return EndpointOut(
        id=row.id,
        url=row.url,
        event_types=row.event_types,
        description=row.description,
        enabled=row.enabled,
        secret=row.secret,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def delivery_out(row: store.DeliveryRow) -> DeliveryOut:
    fields = {k: v for k, v in row.__dict__.items() if k not in ("payload", "endpoint_id")}
    return DeliveryOut(**fields)


async def _endpoint(plat: Platform, account: int, endpoint_id: int) -> store.EndpointRow:
    row = await plat.db.run(store.get_endpoint, account, endpoint_id)
    if row is None:
        raise Problem(404, f"no webhook endpoint {endpoint_id} in this account")
    return row


@router.post("", status_code=201, response_model=EndpointOut, summary="Add an endpoint")
async def create(
    body: EndpointIn, account: int = Depends(account_id), plat: Platform = Depends(platform)
) -> EndpointOut:
    _reachable(body.url, plat)
    row = await plat.db.run(
        store.create_endpoint,
        account,
        body.url,
        body.event_types,
        body.description,
        new_secret(),
        plat.clock.now(),
        body.enabled,
    )
    return endpoint_out(row)


@router.get("", response_model=EndpointList, summary="List endpoints")
async def list_endpoints(
    account: int = Depends(account_id), plat: Platform = Depends(platform)
) -> EndpointList:
    return EndpointList(data=[endpoint_out(r) for r in await plat.db.run(store.list_endpoints, account)])


@router.get("/{endpoint_id}", response_model=EndpointOut, summary="One endpoint")
async def get_endpoint(
    endpoint_id: int, account: int = Depends(account_id), plat: Platform = Depends(platform)
) -> EndpointOut:
    return endpoint_out(await _endpoint(plat, account, endpoint_id))


@router.patch("/{endpoint_id}", response_model=EndpointOut, summary="Change an endpoint")
async def update(
    endpoint_id: int,
    body: EndpointPatch,
    account: int = Depends(account_id),
    plat: Platform = Depends(platform),
) -> EndpointOut:
    _reachable(body.url, plat)
    changes: dict[str, Any] = body.model_dump(exclude_none=True, exclude={"rotate_secret"})
    if body.rotate_secret:
        changes["secret"] = new_secret()
    row = await plat.db.run(store.update_endpoint, account, endpoint_id, changes, plat.clock.now())
    if row is None:
        raise Problem(404, f"no webhook endpoint {endpoint_id} in this account")
    return endpoint_out(row)


@router.delete("/{endpoint_id}", status_code=204, response_class=Response, summary="Remove an endpoint")
async def remove(
    endpoint_id: int, account: int = Depends(account_id), plat: Platform = Depends(platform)
) -> Response:
    if not await plat.db.run(store.delete_endpoint, account, endpoint_id):
        raise Problem(404, f"no webhook endpoint {endpoint_id} in this account")
    return Response(status_code=204)


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryPage, summary="Delivery log, newest first")
async def deliveries(
    endpoint_id: int,
    state: Literal["pending", "delivered", "failed"] | None = None,
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = None,
    account: int = Depends(account_id),
    plat: Platform = Depends(platform),
) -> DeliveryPage:
    await _endpoint(plat, account, endpoint_id)
    before = decode_cursor(cursor, "d") if cursor else None
    rows = await plat.db.run(
        store.list_deliveries, account, endpoint_id, state=state, before_id=before, limit=limit + 1
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return DeliveryPage(
        data=[delivery_out(r) for r in rows],
        next_cursor=encode_cursor(rows[-1].id, "d") if more and rows else None,
    )


@router.get(
    "/{endpoint_id}/deliveries/{delivery_id}",
    response_model=DeliveryDetail,
    summary="One delivery with its body",
)
async def delivery(
    endpoint_id: int, delivery_id: int, account: int = Depends(account_id), plat: Platform = Depends(platform)
) -> DeliveryDetail:
    row = await plat.db.run(store.get_delivery, account, endpoint_id, delivery_id)
    if row is None:
        raise Problem(404, f"no delivery {delivery_id} for webhook endpoint {endpoint_id}")
    return DeliveryDetail(**delivery_out(row).model_dump(), payload=json.loads(row.payload))


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/replay",
    status_code=202,
    response_model=DeliveryOut,
    summary="Send a delivery again",
    description="The same body and `webhook-id` are sent again now, with a fresh retry period.",
)
async def replay(
    endpoint_id: int, delivery_id: int, account: int = Depends(account_id), plat: Platform = Depends(platform)
) -> DeliveryOut:
    found = await plat.db.run(store.get_delivery, account, endpoint_id, delivery_id)
    if found is None:
        raise Problem(404, f"no delivery {delivery_id} for webhook endpoint {endpoint_id}")
    row = await plat.db.run(store.replay, account, endpoint_id, delivery_id, plat.clock.now())
    if row is None:
        raise Problem(409, "the delivery is being sent right now; replay it once that attempt is over")
    plat.webhooks.wakeup.set()
    return delivery_out(row)


@router.post(
    "/{endpoint_id}/test",
    status_code=202,
    response_model=DeliveryOut,
    summary="Send a test event",
    description=f"Queues a `{TEST_EVENT}` delivery to the endpoint; follow it in the delivery log.",
)
async def send_test(
    endpoint_id: int, account: int = Depends(account_id), plat: Platform = Depends(platform)
) -> DeliveryOut:
    endpoint = await _endpoint(plat, account, endpoint_id)
    now = plat.clock.now()
    new_id = await plat.db.run(store.add_delivery, endpoint, TEST_EVENT, test_payload(endpoint.id, now), now)
    plat.webhooks.wakeup.set()
    row = await plat.db.run(store.get_delivery, account, endpoint_id, new_id)
    assert row is not None
    return delivery_out(row)
