"""Suppression lists: `/v1/suppressions` is the calling account's own list; `/v1/admin/suppressions` is
the global list shared by every account, for platform-admin keys only.

Every addition and removal is written to an audit trail naming the key that made it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from estafeta import suppression
from estafeta.api.deps import Caller, admin_actor, caller, get_core
from estafeta.api.params import (
    ADDRESS_OR_DOMAIN,
    SUPPRESSION_CSV,
    Cursor,
    FreeText,
    OneLine,
    decode_cursor,
    encode_cursor,
)
from estafeta.api.problems import Problem
from estafeta.api.route import ApiRoute
from estafeta.audit import Actor
from estafeta.core import Core

router = APIRouter(route_class=ApiRoute, prefix="/v1/suppressions", tags=["suppressions"])
admin_router = APIRouter(route_class=ApiRoute, prefix="/v1/admin/suppressions", tags=["admin"])

_CSV_BODY = {
    "requestBody": {
        "required": True,
        "content": {"text/csv": {"schema": {"type": "string", "format": SUPPRESSION_CSV}}},
    }
}
_CSV_RESPONSE = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}
MAX_IMPORT_BYTES = 20 * 1024 * 1024


class SuppressionOut(BaseModel):
    value: str = Field(description="an address, or a domain (every address at it)")
    kind: str = Field(description="address | domain")
    scope: str = Field(description="account | global")
    reason: str
    detail: str
    created_at: datetime


class SuppressionPage(BaseModel):
    data: list[SuppressionOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at the end")
    global_entry: SuppressionOut | None = Field(
        None,
        description="when `q` is one whole address: the global entry that also stops mail to it, if any",
    )


class SuppressionIn(BaseModel):
    address: OneLine = Field(
        description="an address, or a domain to suppress every address at it",
        json_schema_extra={"format": ADDRESS_OR_DOMAIN},
    )
    reason: str = Field("manual", json_schema_extra={"enum": list(suppression.REASONS)})
    note: FreeText = Field("", max_length=500, description="kept in the audit trail")


class ImportOut(BaseModel):
    added: int
    already_listed: int


def _out(row: suppression.SuppressionRow) -> SuppressionOut:
    return SuppressionOut(
        value=row.value,
        kind=row.kind,
        scope=row.scope,
        reason=row.reason,
        detail=row.detail,
        created_at=row.created_at,
    )


def _value(text: str, field: str) -> suppression.Value:
    try:
        return suppression.parse_value(text)
    except suppression.SuppressionError as exc:
        raise Problem(422, f"{field}: {exc.reason}", errors=[{"field": field, "reason": exc.reason}]) from exc


async def _list(
    core: Core, scope: int | None, q: str | None, reason: str | None, limit: int, cursor: str | None
) -> SuppressionPage:
    if reason is not None and reason not in suppression.REASONS:
        detail = f"unknown reason {reason!r}; one of {', '.join(suppression.REASONS)}"
        raise Problem(422, detail, errors=[{"field": "reason", "reason": "unknown reason"}])
    after = decode_cursor(cursor, "s") if cursor is not None else None
    rows = await core.suppressions.list(scope, search=q, reason=reason, after_id=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    page = SuppressionPage(
        data=[_out(r) for r in rows], next_cursor=encode_cursor(rows[-1].id, "s") if more and rows else None
    )
    if scope is not None and q and "@" in q:
        try:
            value = suppression.parse_value(q)
        except suppression.SuppressionError:
            return page
        entry = await core.suppressions.global_entry(value)
        page.global_entry = _out(entry) if entry is not None else None
    return page


async def _add(
    core: Core, scope: int | None, body: SuppressionIn, actor: Actor, response: Response
) -> SuppressionOut:
    _value(body.address, "address")
    try:
        suppression.check_reason(body.reason)
    except suppression.SuppressionError as exc:
        raise Problem(422, exc.reason, errors=[{"field": "reason", "reason": exc.reason}]) from exc
    row, added = await core.suppressions.add(
        scope, body.address, reason=body.reason, actor=actor, note=body.note
    )
    if added:
        response.status_code = 201
    return _out(row)


async def _remove(core: Core, scope: int | None, address: str, actor: Actor, note: str) -> Response:
    _value(address, "address")
    value, removed = await core.suppressions.remove(scope, address, actor=actor, note=note)
    if removed is None:
        raise Problem(404, f"{value.value} is not on this suppression list")
    return Response(status_code=204)


async def _export(core: Core, scope: int | None, name: str) -> Response:
    return Response(
        await core.suppressions.export_csv(scope),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


async def _import(core: Core, scope: int | None, request: Request, actor: Actor) -> ImportOut:
    raw = await request.body()
    if len(raw) > MAX_IMPORT_BYTES:
        raise Problem(413, f"a CSV file may be at most {MAX_IMPORT_BYTES} bytes; split it")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Problem(
            422, "the CSV file must be UTF-8", errors=[{"field": "body", "reason": str(exc)}]
        ) from exc
    try:
        result = await core.suppressions.import_csv(scope, text, actor=actor)
    except suppression.InvalidRows as exc:
        raise Problem(
            422,
            exc.reason,
            errors=[{"field": f"line {e.line}", "reason": f"{e.value!r}: {e.reason}"} for e in exc.rows],
        ) from exc
    except suppression.SuppressionError as exc:
        raise Problem(422, exc.reason, errors=[{"field": "body", "reason": exc.reason}]) from exc
    return ImportOut(added=result.added, already_listed=result.already_listed)


# -- the account's own list ------------------------------------------------------------------------


@router.get("", response_model=SuppressionPage, summary="List or search the account's suppression list")
async def list_suppressions(
    q: str | None = Query(
        None,
        description="part of an address or domain; a whole address also reports "
        "whether the global list covers it",
    ),
    reason: str | None = Query(
        None,
        description="only entries with this reason",
        json_schema_extra={"enum": list(suppression.REASONS)},
    ),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Cursor("s"),
    who: Caller = Depends(caller),
    core: Core = Depends(get_core),
) -> SuppressionPage:
    return await _list(core, who.account_id, q, reason, limit, cursor)


@router.post(
    "",
    response_model=SuppressionOut,
    status_code=200,
    responses={201: {"model": SuppressionOut, "description": "added"}},
    summary="Suppress an address or domain",
)
async def add_suppression(
    body: SuppressionIn, response: Response, who: Caller = Depends(caller), core: Core = Depends(get_core)
) -> SuppressionOut:
    """201 with the new entry, or 200 with the entry that was there already."""
    return await _add(core, who.account_id, body, who.actor, response)


@router.get("/export", response_class=Response, responses=_CSV_RESPONSE, summary="Export the list as CSV")
async def export_suppressions(who: Caller = Depends(caller), core: Core = Depends(get_core)) -> Response:
    return await _export(core, who.account_id, "suppressions")


@router.post(
    "/import", response_model=ImportOut, openapi_extra=_CSV_BODY, summary="Import CSV (all or nothing)"
)
async def import_suppressions(
    request: Request, who: Caller = Depends(caller), core: Core = Depends(get_core)
) -> ImportOut:
    """A header line naming `value` (and optionally `reason`, `detail`), then one entry per line; an
    export imports as it is. Any invalid row refuses the whole file, with every bad line listed."""
    return await _import(core, who.account_id, request, who.actor)


@router.delete("/{address}", status_code=204, response_class=Response, summary="Remove an entry (audited)")
async def remove_suppression(
    address: Annotated[str, Path(json_schema_extra={"format": ADDRESS_OR_DOMAIN})],
    note: Annotated[FreeText, Query(max_length=500, description="kept in the audit trail")] = "",
    who: Caller = Depends(caller),
    core: Core = Depends(get_core),
) -> Response:
    return await _remove(core, who.account_id, address, who.actor, note)


# -- the global list (platform admin) --------------------------------------------------------------


@admin_router.get("", response_model=SuppressionPage, summary="List or search the global suppression list")
async def list_global(
    q: str | None = Query(None, description="part of an address or domain"),
    reason: str | None = Query(
        None,
        description="only entries with this reason",
        json_schema_extra={"enum": list(suppression.REASONS)},
    ),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Cursor("s"),
    _: Actor = Depends(admin_actor),
    core: Core = Depends(get_core),
) -> SuppressionPage:
    return await _list(core, None, q, reason, limit, cursor)


@admin_router.post(
    "",
    response_model=SuppressionOut,
    responses={201: {"model": SuppressionOut, "description": "added"}},
    summary="Suppress an address or domain for everyone",
)
async def add_global(
    body: SuppressionIn,
    response: Response,
    actor: Actor = Depends(admin_actor),
    core: Core = Depends(get_core),
) -> SuppressionOut:
    return await _add(core, None, body, actor, response)


@admin_router.get("/export", response_class=Response, responses=_CSV_RESPONSE, summary="Export as CSV")
async def export_global(_: Actor = Depends(admin_actor), core: Core = Depends(get_core)) -> Response:
    return await _export(core, None, "global-suppressions")


@admin_router.post("/import", response_model=ImportOut, openapi_extra=_CSV_BODY, summary="Import CSV")
async def import_global(
    request: Request, actor: Actor = Depends(admin_actor), core: Core = Depends(get_core)
) -> ImportOut:
    return await _import(core, None, request, actor)


@admin_router.delete("/{address}", status_code=204, response_class=Response, summary="Remove an entry")
async def remove_global(
    address: Annotated[str, Path(json_schema_extra={"format": ADDRESS_OR_DOMAIN})],
    note: Annotated[FreeText, Query(max_length=500, description="kept in the audit trail")] = "",
    actor: Actor = Depends(admin_actor),
    core: Core = Depends(get_core),
) -> Response:
    return await _remove(core, None, address, actor, note)
