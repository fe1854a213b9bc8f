"""`/v1/admin/audit`: the audit log for operators, newest first, filtered, with cursor pagination."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from estafeta.api.deps import admin_actor, get_core
from estafeta.api.params import Cursor, Moment, OneLine, decode_cursor, encode_cursor
from estafeta.api.route import ApiRoute
from estafeta.audit import Actor, AuditFilter
from estafeta.core import Core
from estafeta.ids import MAX_ID

router = APIRouter(route_class=ApiRoute, prefix="/v1/admin", tags=["admin"])

ACTION_PATTERN = r"^[a-z_]+(\.[a-z_]+)*$"


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor: str = Field(
        description="`admin:<key prefix>`, `api:<key prefix>`, `user:<id>/<email>` (dashboard), "
        "`cli:<os user>` or `system`"
    )
    account_id: int | None = Field(description="the account acted upon; null for platform-wide actions")
    action: str = Field(description="dotted, e.g. `review.approve`, `api_key.revoke`")
    target: str = Field(description="what was acted upon, e.g. `review:12`, a key prefix, a domain")
    details: dict[str, Any] = Field(description="a few plain values; never a secret")
    origin: str = Field(description="the client's address, or `cli` or `system`")


class AuditPage(BaseModel):
    data: list[AuditEntryOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page; null at the end")


@router.get("/audit", response_model=AuditPage, summary="The audit log: who did what, when, from where")
async def list_audit(
    account_id: int | None = Query(None, ge=1, le=MAX_ID, description="only actions on this account"),
    action: str | None = Query(
        None,
        max_length=60,
        pattern=ACTION_PATTERN,
        description="an action (`review.approve`) or a group of them (`review`)",
    ),
    actor: Annotated[OneLine | None, Query(max_length=400, description="exactly this actor")] = None,
    since: Annotated[Moment | None, Query(description="at or after (ISO 8601)")] = None,
    until: Annotated[
        Moment | None, Query(description="before (ISO 8601); not after `since`: no entry")
    ] = None,
    limit: int = Query(50, ge=1, le=100),
    cursor: str | None = Cursor("l"),
    _: Actor = Depends(admin_actor),
    core: Core = Depends(get_core),
) -> dict[str, Any]:
    where = AuditFilter(account_id=account_id, action=action, actor=actor, since=since, until=until)
    before = decode_cursor(cursor, "l") if cursor is not None else None
    rows = await core.audit.entries(where, before_id=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "data": [vars(r) for r in rows],
        "next_cursor": encode_cursor(rows[-1].id, "l") if more else None,
    }
