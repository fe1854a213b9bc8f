"""`/v1/streams`: an account's transactional and broadcast streams, each with its own From domain and,
optionally, its own IP pool."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from estafeta.api.deps import Caller, account_id, caller, get_core
from estafeta.api.params import IP_POOL, SENDING_DOMAIN, OneLine, formatted
from estafeta.api.problems import Problem
from estafeta.api.route import ApiRoute
from estafeta.core import Core
from estafeta.streams import StreamError, StreamRow

router = APIRouter(route_class=ApiRoute, prefix="/v1/streams", tags=["streams"])

StreamName = Literal["transactional", "broadcast"]


class StreamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    from_domain: OneLine = Field(
        "",
        max_length=255,
        description="the only From domain of this stream (empty: any of the account's)",
        json_schema_extra=formatted(SENDING_DOMAIN),
    )
    ip_pool: OneLine = Field(
        "",
        max_length=64,
        description="a pool of `ip_pools` in the settings (empty: the default)",
        json_schema_extra=formatted(IP_POOL),
    )


class StreamOut(BaseModel):
    stream: StreamName
    from_domain: str
    ip_pool: str
    updated_at: datetime | None


class StreamList(BaseModel):
    data: list[StreamOut]


def _out(name: str, row: StreamRow | None) -> StreamOut:
    if row is None:
        return StreamOut(stream=name, from_domain="", ip_pool="", updated_at=None)  # type: ignore[arg-type]
    return StreamOut(stream=name, from_domain=row.from_domain, ip_pool=row.ip_pool, updated_at=row.updated_at)  # type: ignore[arg-type]


@router.get("", response_model=StreamList, summary="The account's streams")
async def list_streams(account: int = Depends(account_id), core: Core = Depends(get_core)) -> StreamList:
    rows = await core.streams.for_account(account)
    return StreamList(data=[_out(name, rows.get(name)) for name in ("transactional", "broadcast")])


@router.put(
    "/{stream}",
    response_model=StreamOut,
    summary="Set a stream's From domain and IP pool",
    description="The two streams must use different From domains (e.g. `mail.example.com` for receipts and "
    "`news.example.com` for newsletters); mail of a stream from another domain is a lint error.",
)
async def put_stream(
    stream: StreamName, body: StreamIn, who: Caller = Depends(caller), core: Core = Depends(get_core)
) -> StreamOut:
    try:
        row = await core.streams.put(who.account_id, stream, body.from_domain, body.ip_pool, actor=who.actor)
    except StreamError as exc:
        raise Problem(
            exc.status, f"{exc.field}: {exc.detail}", errors=[{"field": exc.field, "reason": exc.reason}]
        ) from exc
    return _out(stream, row)
