"""`/v1/streams`: an account's transactional and broadcast streams, each with its own From domain and,
optionally, its own IP pool."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from estafeta.api.deps import account_id, platform
from estafeta.api.problems import Problem
from estafeta.platform import Platform
from estafeta.store import accounts as account_store
from estafeta.store import streams as store

router = APIRouter(prefix="/v1/streams", tags=["streams"])

StreamName = Literal["transactional", "broadcast"]


class StreamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    from_domain: str = Field(
        "", description="the only From domain of this stream (empty: any of the account's)"
    )
    ip_pool: str = Field("", description="a pool of `ip_pools` in the settings (empty: the default)")


class StreamOut(BaseModel):
    stream: StreamName
    from_domain: str
    ip_pool: str
    updated_at: datetime | None


class StreamList(BaseModel):
    data: list[StreamOut]


def _out(name: str, row: store.StreamRow | None) -> StreamOut:
    if row is None:
        return StreamOut(stream=name, from_domain="", ip_pool="", updated_at=None)  # type: ignore[arg-type]
    return StreamOut(stream=name, from_domain=row.from_domain, ip_pool=row.ip_pool, updated_at=row.updated_at)  # type: ignore[arg-type]


@router.get("", response_model=StreamList, summary="The account's streams")
async def list_streams(account: int = Depends(account_id), plat: Platform = Depends(platform)) -> StreamList:
    rows = await plat.db.run(store.for_account, account)
    return StreamList(data=[_out(name, rows.get(name)) for name in ("transactional", "broadcast")])


@router.put(
    "/{stream}",
    response_model=StreamOut,
    summary="Set a stream's From domain and IP pool",
    description="The two streams must use different From domains (e.g. `mail.example.com` for receipts and "
    "`news.example.com` for newsletters); mail of a stream from another domain is a lint error.",
)
async def put_stream(
    stream: StreamName, body: StreamIn, account: int = Depends(account_id), plat: Platform = Depends(platform)
) -> StreamOut:
    domain = body.from_domain.strip().lower().rstrip(".")
    if domain:
        row = await plat.db.run(account_store.find_domain, domain)
        if row is None or row.account_id != account:
            raise Problem(
                422,
                f"from_domain: {domain} is not a sending domain of this account",
                errors=[{"field": "from_domain", "reason": "not a sending domain of this account"}],
            )
        other = (await plat.db.run(store.for_account, account)).get(
            "broadcast" if stream == "transactional" else "transactional"
        )
        if other is not None and other.from_domain == domain:
            raise Problem(
                409,
                f"from_domain: {domain} is the {other.stream} stream's; each stream needs its own",
                errors=[{"field": "from_domain", "reason": f"used by the {other.stream} stream"}],
            )
    if body.ip_pool and body.ip_pool not in plat.settings.ip_pools:
        known = ", ".join(sorted(plat.settings.ip_pools)) or "none configured"
        raise Problem(
            422,
            f"ip_pool: no pool {body.ip_pool!r} (known: {known})",
            errors=[{"field": "ip_pool", "reason": "unknown pool"}],
        )
    row = await plat.db.run(store.put, account, stream, domain, body.ip_pool, plat.clock.now())
    plat.accepter.streams_changed(account)
    plat.engine.sources.invalidate()
    return _out(stream, row)
