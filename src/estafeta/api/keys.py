"""`/v1/api-keys`: the account's API keys, each with a scope (send, read or full); created with the secret
shown once (only an argon2 hash is kept) and revoked at once. Administering keys needs a `full` key."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from estafeta.api.deps import Caller, full_caller, get_core
from estafeta.api.params import OneLine
from estafeta.api.problems import Problem
from estafeta.api.route import ApiRoute

if TYPE_CHECKING:
    from estafeta.core import Core

router = APIRouter(route_class=ApiRoute, prefix="/v1/api-keys", tags=["api keys"])
ScopeName = Literal["send", "read", "full"]
_SCOPES = "send: POST /v1/messages and campaign sends only; read: GET requests only; full: everything"


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: OneLine = Field("", max_length=200, description="a label")
    scope: ScopeName = Field(description=_SCOPES)


class KeyOut(BaseModel):
    prefix: str = Field(description="names the key (`est_<prefix>_…`); pass it to revoke the key")
    name: str
    scope: ScopeName
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    token: str = Field(description="the whole key, shown only in this response")


class KeyList(BaseModel):
    data: list[KeyOut]


@router.post("", status_code=201, response_model=KeyCreated, summary="Create an API key")
async def create_key(
    body: KeyIn, who: Caller = Depends(full_caller), core: Core = Depends(get_core)
) -> KeyCreated:
    new = await core.api_keys.create(who.account_id, body.name, body.scope, actor=who.actor)
    row = next(r for r in await core.api_keys.list(who.account_id) if r.prefix == new.prefix)
    return KeyCreated(token=new.token, **_out(row).model_dump())


@router.get("", response_model=KeyList, summary="List API keys (without secrets)")
async def list_keys(who: Caller = Depends(full_caller), core: Core = Depends(get_core)) -> KeyList:
    return KeyList(data=[_out(r) for r in await core.api_keys.list(who.account_id)])


@router.delete("/{prefix}", status_code=204, response_class=Response, summary="Revoke an API key")
async def revoke_key(
    prefix: str = Path(max_length=32),
    who: Caller = Depends(full_caller),
    core: Core = Depends(get_core),
) -> Response:
    """The key stops working at once on this node, and within a minute on the others."""
    if not await core.api_keys.revoke(who.account_id, prefix, actor=who.actor):
        raise Problem(404, f"no active API key {prefix} in this account")
    return Response(status_code=204)


def _out(row: object) -> KeyOut:
    return KeyOut.model_validate(row, from_attributes=True)
