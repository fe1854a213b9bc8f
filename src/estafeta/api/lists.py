"""`/v1/lists`: lists, their contacts (with the consent behind each subscription), CSV imports, segments."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from estafeta.accept import AcceptError
from estafeta.api.deps import account_id, get_core
from estafeta.api.params import SENDER_ADDRESS, AfterId, Id, Moment, OneLine, formatted
from estafeta.api.problems import Problem
from estafeta.api.route import ApiRoute
from estafeta.audience import segments
from estafeta.audience.consent import ConsentRecord
from estafeta.audience.importer import CsvError
from estafeta.audience.lists import AudienceError
from estafeta.audience.service import ListRow, SegmentRow
from estafeta.core import Core

router = APIRouter(route_class=ApiRoute, prefix="/v1/lists", tags=["lists"])

Scalar = str | int | float | bool | None
_CSV_BODY = {"requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}}


def problem(exc: AudienceError) -> Problem:
    return Problem(
        exc.status, f"{exc.field}: {exc.reason}", errors=[{"field": exc.field, "reason": exc.reason}]
    )


class ListIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: OneLine = Field(min_length=1, max_length=200)
    from_address: OneLine = Field(
        description="From of the list's mail, on a sending domain of the account",
        json_schema_extra=formatted(SENDER_ADDRESS),
    )
    double_opt_in: StrictBool = Field(
        True, description="new subscribers confirm by mail before they get campaigns"
    )


class ListOut(BaseModel):
    id: int
    name: str
    from_address: str
    double_opt_in: bool
    form_url: str = Field(description="the hosted subscription form")
    counts: dict[str, int] = Field(description="subscriptions per status")
    created_at: datetime


class ListPage(BaseModel):
    data: list[ListOut]


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: OneLine = Field(
        min_length=1, max_length=200, description='where consent was given, e.g. "checkout"'
    )
    at: Moment | None = Field(None, description="when; default now")
    confirmed: StrictBool = Field(
        False, description="the address was already confirmed (double opt-in elsewhere): no confirmation mail"
    )


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(json_schema_extra=formatted("email"))
    attributes: dict[str, Scalar] = Field(default_factory=dict)
    consent: ConsentIn


class SubscribedOut(BaseModel):
    contact_id: int
    email: str
    status: Literal["unconfirmed", "subscribed", "unsubscribed"]
    outcome: str = Field(description="new | renewed | unchanged | kept-unsubscribed")


class ContactOut(BaseModel):
    contact_id: int
    email: str
    attributes: dict[str, Any]
    status: str
    consent_source: str
    consent_at: datetime
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None
    unsubscribe_method: str | None
    last_engaged_at: datetime | None


class ContactPage(BaseModel):
    data: list[ContactOut]
    next_cursor: int | None


class ProblemRowOut(BaseModel):
    line: int
    value: str
    reason: str


class FlagOut(BaseModel):
    code: str
    message: str
    count: int


class ImportOut(BaseModel):
    rows: int
    added: int
    already_on_list: int
    kept_unsubscribed: int
    awaiting_confirmation: int
    duplicates: int
    invalid: list[ProblemRowOut]
    flags: list[FlagOut] = Field(description="signs of a bought or scraped list")


class ConditionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attribute: str
    op: str = Field(description="eq ne contains gt gte lt lte in exists missing")
    value: Any = None


class SegmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: OneLine = Field(min_length=1, max_length=200)
    match: Literal["all", "any"] = "all"
    conditions: list[ConditionIn] = Field(min_length=1, max_length=20)


class SegmentOut(BaseModel):
    id: int
    list_id: int
    name: str
    match: str
    conditions: list[dict[str, Any]]
    subscribers: int = Field(description="subscribed contacts in the segment now")


def _list_out(core: Core, row: ListRow) -> ListOut:
    return ListOut(
        id=row.id,
        name=row.name,
        from_address=row.from_address,
        double_opt_in=row.double_opt_in,
        form_url=core.audience.links.form_url(row.public_id),
        counts=row.counts,
        created_at=row.created_at,
    )


async def _list(core: Core, account: int, list_id: int) -> ListRow:
    try:
        return await core.audience.get_list(account, list_id)
    except AudienceError as exc:
        raise Problem(exc.status, exc.reason) from exc


@router.post("", status_code=201, response_model=ListOut, summary="Create a list")
async def create(body: ListIn, account: int = Depends(account_id), core: Core = Depends(get_core)) -> ListOut:
    try:
        row = await core.audience.create_list(account, body.name, body.from_address, body.double_opt_in)
    except AudienceError as exc:
        raise problem(exc) from exc
    return _list_out(core, row)


@router.get("", response_model=ListPage, summary="List the account's lists")
async def list_lists(account: int = Depends(account_id), core: Core = Depends(get_core)) -> ListPage:
    return ListPage(data=[_list_out(core, r) for r in await core.audience.lists(account)])


@router.get("/{list_id}", response_model=ListOut, summary="A list and its counts")
async def get(list_id: Id, account: int = Depends(account_id), core: Core = Depends(get_core)) -> ListOut:
    return _list_out(core, await _list(core, account, list_id))


@router.post(
    "/{list_id}/contacts",
    status_code=201,
    response_model=SubscribedOut,
    summary="Subscribe a contact",
    description="On a double opt-in list the contact is `unconfirmed` and gets a confirmation mail, "
    "unless `consent.confirmed` says the address was confirmed already. Someone who unsubscribed stays "
    "unsubscribed.",
)
async def add_contact(
    list_id: Id, body: ContactIn, account: int = Depends(account_id), core: Core = Depends(get_core)
) -> SubscribedOut:
    mailing_list = await _list(core, account, list_id)
    record = ConsentRecord(body.consent.source, body.consent.at, body.consent.confirmed)
    try:
        result = await core.audience.subscribe(account, mailing_list, body.email, body.attributes, record)
    except AudienceError as exc:
        raise problem(exc) from exc
    except AcceptError as exc:  # the confirmation mail was refused (e.g. the account is paused)
        raise Problem(exc.status, f"{exc.field}: {exc.reason}", errors=exc.errors, kind=exc.kind) from exc
    return SubscribedOut(
        contact_id=result.contact_id,
        email=result.email,
        status=result.status,
        outcome=result.outcome,  # type: ignore[arg-type]
    )


@router.get(
    "/{list_id}/contacts", response_model=ContactPage, summary="The list's contacts and their consent"
)
async def list_contacts(
    list_id: Id,
    status: Literal["unconfirmed", "subscribed", "unsubscribed"] | None = None,
    cursor: AfterId = 0,
    limit: int = Query(100, ge=1, le=1000),
    account: int = Depends(account_id),
    core: Core = Depends(get_core),
) -> ContactPage:
    await _list(core, account, list_id)
    rows = await core.audience.contacts(list_id, status=status, after_id=cursor, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return ContactPage(
        data=[
            ContactOut(
                contact_id=c.id,
                email=c.email,
                attributes=c.attributes,
                status=s.status,
                consent_source=s.consent_source,
                consent_at=s.consent_at,
                confirmed_at=s.confirmed_at,
                unsubscribed_at=s.unsubscribed_at,
                unsubscribe_method=s.unsubscribe_method,
                last_engaged_at=s.last_engaged_at,
            )
            for c, s in rows
        ],
        next_cursor=rows[-1][0].id if more and rows else None,
    )


@router.post(
    "/{list_id}/imports",
    response_model=ImportOut,
    summary="Import contacts from CSV",
    description="The body is CSV (`text/csv`) with a header row naming an `email` column; other columns "
    "become attributes. The answer reports every invalid row and flags signs of a bought or scraped list.",
    openapi_extra=_CSV_BODY,
)
async def import_contacts(
    list_id: Id,
    request: Request,
    consent_source: Annotated[
        OneLine, Query(min_length=1, max_length=200, description="where these people gave consent")
    ],
    confirmed: bool = Query(
        False, description="they confirmed their addresses already (no confirmation mail)"
    ),
    account: int = Depends(account_id),
    core: Core = Depends(get_core),
) -> ImportOut:
    mailing_list = await _list(core, account, list_id)
    try:
        text = (await request.body()).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(422, f"the CSV must be UTF-8 (byte {exc.start} is not)") from exc
    try:
        report = await core.audience.import_csv(
            account, mailing_list, text, ConsentRecord(consent_source, None, confirmed)
        )
    except CsvError as exc:
        raise Problem(422, str(exc), errors=[{"field": "body", "reason": str(exc)}]) from exc
    except AudienceError as exc:  # over the plan's contacts: the rows before this chunk are kept
        raise problem(exc) from exc
    return ImportOut(
        rows=report.rows,
        added=report.added,
        already_on_list=report.already_on_list,
        kept_unsubscribed=report.kept_unsubscribed,
        awaiting_confirmation=report.awaiting_confirmation,
        duplicates=report.duplicates,
        invalid=[ProblemRowOut(**p.__dict__) for p in report.invalid],
        flags=[FlagOut(**f.__dict__) for f in report.flags],
    )


async def _segment_out(core: Core, segment: SegmentRow) -> SegmentOut:
    return SegmentOut(
        id=segment.id,
        list_id=segment.list_id,
        name=segment.name,
        match=segment.match,
        conditions=segment.conditions,
        subscribers=await core.audience.segment_size(segment),
    )


@router.post("/{list_id}/segments", status_code=201, response_model=SegmentOut, summary="Create a segment")
async def create_segment(
    list_id: Id, body: SegmentIn, account: int = Depends(account_id), core: Core = Depends(get_core)
) -> SegmentOut:
    await _list(core, account, list_id)
    raw = [c.model_dump() for c in body.conditions]
    try:
        row = await core.audience.create_segment(account, list_id, body.name, body.match, raw)
    except segments.SegmentError as exc:
        raise Problem(422, str(exc), errors=[{"field": exc.field, "reason": exc.reason}]) from exc
    return await _segment_out(core, row)


@router.get("/{list_id}/segments", response_model=list[SegmentOut], summary="The list's segments")
async def list_segments(
    list_id: Id, account: int = Depends(account_id), core: Core = Depends(get_core)
) -> list[SegmentOut]:
    await _list(core, account, list_id)
    return [await _segment_out(core, s) for s in await core.audience.segments(account, list_id)]
