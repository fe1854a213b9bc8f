"""`/v1/domains/{domain}/keys`: a sending domain's DKIM keys, their rotation and dual signing."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from estafeta.api.deps import Caller, account_id, caller, get_core
from estafeta.api.problems import Problem
from estafeta.api.route import ApiRoute
from estafeta.core import Core
from estafeta.dkim_keys import DkimKeyRow, KeyStateError, KeyStatus
from estafeta.domains import DnsRecord, DomainError

router = APIRouter(route_class=ApiRoute, prefix="/v1/domains", tags=["domains"])

AlgorithmName = Literal["rsa-sha256", "ed25519-sha256"]


class Record(BaseModel):
    name: str
    type: str
    value: str


class KeyOut(BaseModel):
    selector: str
    algorithm: AlgorithmName
    state: Literal["pending", "active", "retiring", "retired"] = Field(
        description="pending: waits for its record in DNS; active: signs; retiring: replaced, kept in DNS "
        "while unfinished mail carries its signature; retired: its record may be removed"
    )
    record: Record = Field(description="the TXT record that publishes the key")
    created_at: datetime
    activated_at: datetime | None
    retiring_at: datetime | None
    retired_at: datetime | None
    unfinished_deliveries: int = Field(description="deliveries that may still be sent with its signature")
    advice: str


class KeyList(BaseModel):
    domain: str
    data: list[KeyOut]


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    algorithm: AlgorithmName | None = Field(
        None, description="which key to replace, when the domain signs with both algorithms"
    )


class AddIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    algorithm: AlgorithmName = Field(description="an algorithm the domain does not sign with yet")


def _out(key: DkimKeyRow, record: DnsRecord, unfinished: int = 0) -> KeyOut:
    status = KeyStatus(key, record, unfinished)
    return KeyOut(
        selector=key.selector,
        algorithm=key.algorithm,  # type: ignore[arg-type]
        state=key.state,  # type: ignore[arg-type]
        record=Record(name=record.name, type=record.type, value=record.value),
        created_at=key.created_at,
        activated_at=key.activated_at,
        retiring_at=key.retiring_at,
        retired_at=key.retired_at,
        unfinished_deliveries=unfinished,
        advice=status.advice,
    )


def _problem(exc: DomainError) -> Problem:
    return Problem(409 if isinstance(exc, KeyStateError) else 404, str(exc))


@router.get("/{domain}/keys", response_model=KeyList, summary="A sending domain's DKIM keys")
async def list_keys(
    domain: str, account: int = Depends(account_id), core: Core = Depends(get_core)
) -> KeyList:
    try:
        row, statuses = await core.dkim_keys.keys(domain, account_id=account)
    except DomainError as exc:
        raise _problem(exc) from exc
    return KeyList(domain=row.name, data=[_out(s.key, s.record, s.unfinished) for s in statuses])


@router.post(
    "/{domain}/keys/rotate",
    response_model=KeyOut,
    status_code=201,
    summary="Start a key rotation: a new dated selector, used once its record is in DNS",
)
async def rotate_key(
    domain: str,
    body: RotateIn | None = None,
    who: Caller = Depends(caller),
    core: Core = Depends(get_core),
) -> KeyOut:
    try:
        _, key, record = await core.dkim_keys.rotate(
            domain, body.algorithm if body else None, account_id=who.account_id, actor=who.actor
        )
    except DomainError as exc:
        raise _problem(exc) from exc
    return _out(key, record)


@router.post(
    "/{domain}/keys",
    response_model=KeyOut,
    status_code=201,
    summary="Sign with a second algorithm too (dual signing), once the new key's record is in DNS",
)
async def add_key(
    domain: str, body: AddIn, who: Caller = Depends(caller), core: Core = Depends(get_core)
) -> KeyOut:
    try:
        _, key, record = await core.dkim_keys.add(
            domain, body.algorithm, account_id=who.account_id, actor=who.actor
        )
    except DomainError as exc:
        raise _problem(exc) from exc
    return _out(key, record)
