"""The sender's overview (charts per stream, reputation against the limits, warm-up) and plan usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from estafeta import stats
from estafeta.reputation import QUESTIONS, ReviewError, sender_state
from estafeta.users import Identity
from estafeta.web.charts import SERIES, stream_charts
from estafeta.web.render import page
from estafeta.web.session import PageError, actor, get_core, reader, sender, signed_in

router = APIRouter()
PERIODS = {"24h": "Last 24 hours, by hour", "30d": "Last 30 days, by day"}


def period(now: datetime, name: str) -> tuple[datetime, datetime, stats.Bucket]:
    """Whole hours for the last day, whole UTC days for the last month."""
    if name == "30d":
        until = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
        return until - timedelta(days=30), until, "day"
    until = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return until - timedelta(hours=24), until, "hour"


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, span: str = "24h", who: Identity = Depends(signed_in)) -> Response:
    if who.account_id is None:
        if who.user.operator:
            return RedirectResponse("/app/admin", status_code=303)
        raise PageError(
            404, "No account", "You are not a member of any account yet; ask an owner for an invitation."
        )
    if span not in PERIODS:
        span = "24h"
    core = get_core(request)
    now = core.clock.now()
    since, until, bucket = period(now, span)
    report = await core.stats(who.account_id, since, until, ["stream"], bucket)
    standing = await core.reputation.standing(who.account_id)
    review = standing["review"]
    states = {name: sender_state(info["state"], review, name) for name, info in standing["streams"].items()}
    usage = await core.plans.usage(who.account_id)
    return page(
        request,
        "overview.html",
        who,
        title="Overview",
        span=span,
        periods=PERIODS,
        charts=stream_charts(report),
        series=SERIES,
        total=report.total,
        rates=stats.rates(report.total),
        standing=standing,
        states=states,
        review=review,
        questions=QUESTIONS,
        thresholds=core.settings.reputation,
        usage=usage,
    )


@router.post("/review-answers", response_class=HTMLResponse)
async def answer_review(request: Request, who: Identity = Depends(sender)) -> Response:
    form = await request.form()
    answers = {q: str(form.get(q) or "").strip()[:4000] for q in QUESTIONS}
    missing = [q for q, text in answers.items() if not text]
    if missing:
        raise PageError(422, "Answer every question", f"Missing: {', '.join(missing)}.")
    assert who.account_id is not None
    try:
        await get_core(request).reputation.answer(who.account_id, answers, actor(who, request).name)
    except ReviewError as exc:
        raise PageError(exc.status, "Nothing to answer", str(exc)) from exc
    return RedirectResponse("/app/?answered=1", status_code=303)


@router.get("/usage", response_class=HTMLResponse)
async def usage(request: Request, who: Identity = Depends(reader)) -> Response:
    core = get_core(request)
    assert who.account_id is not None
    found = await core.plans.usage(who.account_id)
    return page(request, "usage.html", who, title="Usage", usage=found)
