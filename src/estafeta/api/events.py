"""`/v1/events`: the account's event log, filtered, oldest first, with cursor pagination."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from estafeta.api.deps import account_id, get_core
from estafeta.api.params import Cursor, Moment, decode_cursor, encode_cursor
from estafeta.api.problems import Problem
from estafeta.api.route import ApiRoute
from estafeta.api.schemas import EventOut, EventPage
from estafeta.core import Core
from estafeta.messages import EventFilter

router = APIRouter(route_class=ApiRoute, prefix="/v1/events", tags=["events"])

EVENT_TYPES = {
    "accepted",
    "queued",
    "deferred",
    "delivered",
    "bounced",
    "soft_bounced",
    "complained",
    "abuse_reported",
    "auto_replied",
    "suppressed",
    "trap_hit",
    "opened",
    "clicked",
    "unsubscribed",
    "held",
    "cancelled",
    "account_warning",
    "account_paused",
    "account_resumed",
    "account_suspended",
    "review_requested",
    "limit_raised",
    "account_terminated",
    "domain.key_active",
    "domain.key_retired",
}


@router.get("", response_model=EventPage, summary="List events")
async def list_events(
    type: list[str] = Query(
        default_factory=list,
        description="event types to include (repeatable)",
        json_schema_extra={"items": {"type": "string", "enum": sorted(EVENT_TYPES)}},
    ),
    message_id: str | None = None,
    recipient: str | None = None,
    since: Annotated[Moment | None, Query(description="created at or after (ISO 8601)")] = None,
    until: Annotated[Moment | None, Query(description="created before (ISO 8601)")] = None,
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Cursor("e"),
    account: int = Depends(account_id),
    core: Core = Depends(get_core),
) -> EventPage:
    unknown = sorted(set(type) - EVENT_TYPES)
    if unknown:
        raise Problem(
            422,
            f"unknown event type {', '.join(unknown)}; known: {', '.join(sorted(EVENT_TYPES))}",
            errors=[{"field": "type", "reason": f"unknown event type {t}"} for t in unknown],
        )
    flt = EventFilter(
        account_id=account,
        types=type,
        message_id=message_id,
        recipient=recipient,
        since=since,
        until=until,
        after_id=decode_cursor(cursor) if cursor is not None else None,
    )
    rows = await core.messages.events(flt, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return EventPage(
        data=[EventOut(**r.__dict__) for r in rows],
        next_cursor=encode_cursor(rows[-1].id) if more and rows else None,
    )
