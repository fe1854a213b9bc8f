"""`/v1/webhooks`: endpoints that receive the account's events, their delivery log, replay and a test."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from estafeta.api.deps import Caller, full_account, full_caller, get_core
from estafeta.api.params import Cursor, Id, OneLine, decode_cursor, encode_cursor, formatted
from estafeta.api.problems import Problem
from estafeta.api.route import ApiRoute
from estafeta.core import Core
from estafeta.webhook_endpoints import (
    EVENT_TYPE,
    DeliveryRow,
    EndpointRow,
    WebhookError,
    check_event_types,
    check_url,
)
from estafeta.webhooks import TEST_EVENT

router = APIRouter(route_class=ApiRoute, prefix="/v1/webhooks", tags=["webhooks"])


EventTypeName = Annotated[str, Field(json_schema_extra={"pattern": f"^(?:{EVENT_TYPE.pattern})$"})]
"""An event type's name, or `*` (checked by `check_event_types`)."""


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        max_length=2000, description="where events are POSTed", json_schema_extra=formatted("uri")
    )
    event_types: list[EventTypeName] = Field(
        default_factory=list, max_length=50, description='types to send; empty or ["*"]: every type'
    )
    description: OneLine = Field("", max_length=200)
    enabled: StrictBool = True

    _url = field_validator("url")(check_url)
    _types = field_validator("event_types")(check_event_types)


class EndpointPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Annotated[str, Field(max_length=2000, json_schema_extra=formatted("uri"))] | None = None
    event_types: list[EventTypeName] | None = Field(None, max_length=50)
    description: OneLine | None = Field(None, max_length=200)
    enabled: StrictBool | None = None
    rotate_secret: StrictBool = Field(
        False, description="replace the signing secret (the old one stops at once)"
    )

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


def endpoint_out(row: EndpointRow) -> EndpointOut:
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


def delivery_out(row: DeliveryRow) -> DeliveryOut:
    fields = {k: v for k, v in row.__dict__.items() if k not in ("payload", "endpoint_id")}
    return DeliveryOut(**fields)


def _problem(exc: WebhookError) -> Problem:
    if exc.field is None:
        return Problem(exc.status, exc.reason)
    return Problem(exc.status, str(exc), errors=[{"field": exc.field, "reason": exc.reason}])


@router.post("", status_code=201, response_model=EndpointOut, summary="Add an endpoint")
async def create(
    body: EndpointIn, who: Caller = Depends(full_caller), core: Core = Depends(get_core)
) -> EndpointOut:
    try:
        row = await core.webhooks.create(
            who.account_id, body.url, body.event_types, body.description, body.enabled, actor=who.actor
        )
    except WebhookError as exc:
        raise _problem(exc) from exc
    return endpoint_out(row)


@router.get("", response_model=EndpointList, summary="List endpoints")
async def list_endpoints(
    account: int = Depends(full_account), core: Core = Depends(get_core)
) -> EndpointList:
    return EndpointList(data=[endpoint_out(r) for r in await core.webhooks.list(account)])


@router.get("/{endpoint_id}", response_model=EndpointOut, summary="One endpoint")
async def get_endpoint(
    endpoint_id: Id, account: int = Depends(full_account), core: Core = Depends(get_core)
) -> EndpointOut:
    try:
        return endpoint_out(await core.webhooks.get(account, endpoint_id))
    except WebhookError as exc:
        raise _problem(exc) from exc


@router.patch("/{endpoint_id}", response_model=EndpointOut, summary="Change an endpoint")
async def update(
    endpoint_id: Id,
    body: EndpointPatch,
    who: Caller = Depends(full_caller),
    core: Core = Depends(get_core),
) -> EndpointOut:
    changes: dict[str, Any] = body.model_dump(exclude_none=True, exclude={"rotate_secret"})
    try:
        row = await core.webhooks.update(
            who.account_id, endpoint_id, changes, rotate_secret=body.rotate_secret, actor=who.actor
        )
    except WebhookError as exc:
        raise _problem(exc) from exc
    return endpoint_out(row)


@router.delete("/{endpoint_id}", status_code=204, response_class=Response, summary="Remove an endpoint")
async def remove(
    endpoint_id: Id, who: Caller = Depends(full_caller), core: Core = Depends(get_core)
) -> Response:
    try:
        await core.webhooks.remove(who.account_id, endpoint_id, actor=who.actor)
    except WebhookError as exc:
        raise _problem(exc) from exc
    return Response(status_code=204)


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryPage, summary="Delivery log, newest first")
async def deliveries(
    endpoint_id: Id,
    state: Literal["pending", "delivered", "failed"] | None = None,
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Cursor("d"),
    account: int = Depends(full_account),
    core: Core = Depends(get_core),
) -> DeliveryPage:
    before = decode_cursor(cursor, "d") if cursor is not None else None
    try:
        rows = await core.webhooks.deliveries(
            account, endpoint_id, state=state, before_id=before, limit=limit + 1
        )
    except WebhookError as exc:
        raise _problem(exc) from exc
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
    endpoint_id: Id, delivery_id: Id, account: int = Depends(full_account), core: Core = Depends(get_core)
) -> DeliveryDetail:
    try:
        row = await core.webhooks.delivery(account, endpoint_id, delivery_id)
    except WebhookError as exc:
        raise _problem(exc) from exc
    return DeliveryDetail(**delivery_out(row).model_dump(), payload=json.loads(row.payload))


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/replay",
    status_code=202,
    response_model=DeliveryOut,
    summary="Send a delivery again",
    description="The same body and `webhook-id` are sent again now, with a fresh retry period.",
)
async def replay(
    endpoint_id: Id, delivery_id: Id, account: int = Depends(full_account), core: Core = Depends(get_core)
) -> DeliveryOut:
    try:
        return delivery_out(await core.webhooks.replay(account, endpoint_id, delivery_id))
    except WebhookError as exc:
        raise _problem(exc) from exc


@router.post(
    "/{endpoint_id}/test",
    status_code=202,
    response_model=DeliveryOut,
    summary="Send a test event",
    description=f"Queues a `{TEST_EVENT}` delivery to the endpoint; follow it in the delivery log.",
)
async def send_test(
    endpoint_id: Id, account: int = Depends(full_account), core: Core = Depends(get_core)
) -> DeliveryOut:
    try:
        return delivery_out(await core.webhooks.send_test(account, endpoint_id))
    except WebhookError as exc:
        raise _problem(exc) from exc
