"""The abuse desk for operators: reports mailed to abuse@ and postmaster@ (`/v1/admin/abuse`), and
terminating an account (`/v1/admin/accounts/{id}/terminate`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from estafeta.abuse import ReportRow
from estafeta.api.deps import admin_actor, get_core
from estafeta.api.params import Cursor, Id, OneLine, decode_cursor, encode_cursor
from estafeta.api.problems import Problem
from estafeta.api.route import ApiRoute
from estafeta.audit import Actor
from estafeta.core import Core
from estafeta.ids import MAX_ID
from estafeta.termination import TerminationError

router = APIRouter(route_class=ApiRoute, prefix="/v1/admin", tags=["admin"])


class AbuseReportOut(BaseModel):
    id: int
    received_at: datetime
    mailbox: str = Field(description="the abuse@ or postmaster@ address it was sent to")
    reporter: str | None = Field(description="the From address of the report")
    subject: str
    category: str = Field(
        description="a person's report: phishing, malware, spam, other; else what the mail was: complaint "
        "(a feedback-loop report, counted as a complaint), feedback, bounce, auto-reply"
    )
    account_id: int | None = Field(description="the account it was matched to; null: the operators' inbox")
    message_id: str | None
    recipient: str | None
    matched_by: str = Field(description="verp, message-id, tracking (verified); feedback-id, dkim (claimed)")
    excerpt: str = Field(description="the reporter's own words, shortened")
    review_id: int | None
    size: int = Field(description="bytes received")


class AbuseReportPage(BaseModel):
    data: list[AbuseReportOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page; null at the end")


class AbuseReportDetail(AbuseReportOut):
    raw: str = Field(description="the message as kept (up to inbound.abuse_keep_bytes), decoded as UTF-8")


class Termination(BaseModel):
    reason: OneLine = Field(min_length=1, max_length=2000, description="why; kept with the account")


def _out(row: ReportRow) -> dict[str, Any]:
    return dict(vars(row))


@router.get("/abuse", response_model=AbuseReportPage, summary="Reports mailed to abuse@ and postmaster@")
async def list_reports(
    matched: bool | None = Query(None, description="false: the operators' inbox (no account matched)"),
    account_id: int | None = Query(None, ge=1, le=MAX_ID, description="only reports matched to this account"),
    limit: int = Query(50, ge=1, le=100),
    cursor: str | None = Cursor("a"),
    _: Actor = Depends(admin_actor),
    core: Core = Depends(get_core),
) -> dict[str, Any]:
    before = decode_cursor(cursor, "a") if cursor is not None else None
    rows = await core.abuse.reports(matched=matched, account_id=account_id, before_id=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "data": [_out(r) for r in rows],
        "next_cursor": encode_cursor(rows[-1].id, "a") if more else None,
    }


@router.get("/abuse/{report_id}", response_model=AbuseReportDetail, summary="One report, as received")
async def show_report(
    report_id: Id, _: Actor = Depends(admin_actor), core: Core = Depends(get_core)
) -> dict[str, Any]:
    found = await core.abuse.report(report_id)
    if found is None:
        raise Problem(404, f"no abuse report {report_id}")
    row, raw = found
    return {**_out(row), "raw": raw.decode("utf-8", "replace")}


@router.post("/accounts/{account_id}/terminate", summary="Terminate an account")
async def terminate(
    account_id: Id,
    body: Termination,
    actor: Actor = Depends(admin_actor),
    core: Core = Depends(get_core),
) -> dict[str, Any]:
    """Cancel all of the account's waiting mail (one `cancelled` event each), revoke its API keys and SMTP
    credentials, cancel its campaigns, suspend its streams, and record who terminated it, when and why.
    404 for an unknown account, 409 when it is terminated already."""
    try:
        return await core.terminations.terminate(account_id, actor, body.reason)
    except TerminationError as exc:
        raise Problem(exc.status, str(exc)) from exc
