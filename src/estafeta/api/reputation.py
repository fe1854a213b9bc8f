"""Reputation: the sender's standing and review answers, cancelling waiting mail, and the administrators'
review queue (`/v1/admin/reviews`) and stream controls."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from estafeta.api.deps import Caller, admin_actor, caller, get_core
from estafeta.api.params import FreeText, Id, OneLine
from estafeta.api.problems import Problem
from estafeta.api.route import ApiRoute
from estafeta.audit import Actor
from estafeta.core import Core
from estafeta.reputation import ReviewError

router = APIRouter(route_class=ApiRoute, tags=["reputation"])
admin_router = APIRouter(route_class=ApiRoute, prefix="/v1/admin", tags=["admin"])


class ReviewAnswers(BaseModel):
    """The four questions a paused or flagged sender answers for the administrators."""

    collection: FreeText = Field(
        min_length=1, max_length=4000, description="how the addresses were collected"
    )
    consent: FreeText = Field(min_length=1, max_length=4000, description="how consent was obtained")
    content: FreeText = Field(min_length=1, max_length=4000, description="what is sent")
    frequency: FreeText = Field(min_length=1, max_length=4000, description="how often it is sent")


class Decision(BaseModel):
    note: FreeText = Field("", max_length=4000)


class StreamControl(BaseModel):
    stream: Literal["transactional", "broadcast"]
    state: Literal["active", "paused", "suspended"]
    reason: OneLine = Field("", max_length=2000)


class CancelRequest(BaseModel):
    stream: Literal["transactional", "broadcast"] = "broadcast"


def _review_problem(exc: ReviewError) -> Problem:
    return Problem(exc.status, str(exc))


@router.get("/v1/account/reputation", summary="The account's sending standing, metrics and limit")
async def reputation(who: Caller = Depends(caller), core: Core = Depends(get_core)) -> dict[str, Any]:
    return await core.reputation.standing(who.account_id)


@router.post("/v1/account/review-answers", summary="Answer the review questions")
async def review_answers(
    body: ReviewAnswers, who: Caller = Depends(caller), core: Core = Depends(get_core)
) -> dict[str, Any]:
    try:
        review_id = await core.reputation.answer(who.account_id, body.model_dump(), who.actor.name)
    except ReviewError as exc:
        raise _review_problem(exc) from exc
    return {"review_id": review_id, "answers": body.model_dump()}


@router.post("/v1/messages/{message_id}/cancel", summary="Cancel a message's waiting recipients")
async def cancel_message(
    message_id: str, who: Caller = Depends(caller), core: Core = Depends(get_core)
) -> dict[str, int]:
    """Queued, deferred or held recipients become `cancelled` (one `cancelled` event each); recipients
    being delivered right now are not stopped."""
    cancelled = await core.messages.cancel(who.account_id, message_id, who.actor.name)
    if cancelled is None:
        raise Problem(404, f"no message {message_id} in this account")
    return {"cancelled": cancelled}


@router.post("/v1/messages/cancel", summary="Cancel every waiting message of a stream")
async def cancel_stream(
    body: CancelRequest, who: Caller = Depends(caller), core: Core = Depends(get_core)
) -> dict[str, int]:
    cancelled = await core.messages.cancel_stream(who.account_id, body.stream, who.actor.name)
    return {"cancelled": cancelled}


@admin_router.get("/reviews", summary="The review queue")
async def list_reviews(
    state: Literal["open", "approved", "rejected"] | None = Query("open"),
    _: Actor = Depends(admin_actor),
    core: Core = Depends(get_core),
) -> dict[str, Any]:
    rows = await core.reputation.reviews(state)
    return {"data": [r.__dict__ for r in rows]}


@admin_router.get("/reviews/{review_id}", summary="A review with metrics, failures, samples and answers")
async def show_review(
    review_id: Id, _: Actor = Depends(admin_actor), core: Core = Depends(get_core)
) -> dict[str, Any]:
    try:
        return await core.reputation.review(review_id)
    except ReviewError as exc:
        raise _review_problem(exc) from exc


@admin_router.post("/reviews/{review_id}/approve", summary="Approve: resume sending")
async def approve(
    review_id: Id,
    body: Decision | None = None,
    actor: Actor = Depends(admin_actor),
    core: Core = Depends(get_core),
) -> dict[str, Any]:
    try:
        result = await core.reputation.approve(review_id, actor, body.note if body else "")
    except ReviewError as exc:
        raise _review_problem(exc) from exc
    return result


@admin_router.post("/reviews/{review_id}/reject", summary="Reject: the account stays suspended")
async def reject(
    review_id: Id,
    body: Decision | None = None,
    actor: Actor = Depends(admin_actor),
    core: Core = Depends(get_core),
) -> dict[str, Any]:
    try:
        return await core.reputation.reject(review_id, actor, body.note if body else "")
    except ReviewError as exc:
        raise _review_problem(exc) from exc


@admin_router.post("/accounts/{account_id}/streams", summary="Pause, suspend or resume an account's stream")
async def control_stream(
    account_id: Id,
    body: StreamControl,
    actor: Actor = Depends(admin_actor),
    core: Core = Depends(get_core),
) -> dict[str, Any]:
    if await core.accounts.get(account_id) is None:
        raise Problem(404, f"no account {account_id}")
    try:
        await core.reputation.set_stream(account_id, body.stream, body.state, body.reason, actor)
    except ReviewError as exc:
        raise _review_problem(exc) from exc
    return await core.reputation.standing(account_id)
