"""Operator pages: accounts and their plans, the review queue, the global suppression list, providers and
the queue, plans."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from estafeta.api.params import Id
from estafeta.ids import parse_id
from estafeta.messages import EventFilter
from estafeta.plans import PlanError
from estafeta.reputation import QUESTIONS, ReviewError, sender_state
from estafeta.termination import TerminationError
from estafeta.users import Identity
from estafeta.web.render import page
from estafeta.web.session import PageError, actor, get_core, operator
from estafeta.web.views.messages import (
    add_suppression,
    export_suppressions,
    remove_suppression,
    suppressions_page,
)

router = APIRouter(prefix="/admin")


@router.get("", response_class=HTMLResponse)
async def accounts(request: Request, notice: str = "", who: Identity = Depends(operator)) -> Response:
    core = get_core(request)
    rows = []
    for assignment in await core.plans.assignments():
        overview = await core.reputation.standing(assignment.account_id)
        review = overview["review"]
        states = {
            name: sender_state(info["state"], review, name)[0] for name, info in overview["streams"].items()
        }
        rows.append((assignment, overview, states, review))
    return page(
        request,
        "admin_accounts.html",
        who,
        title="Accounts",
        rows=rows,
        plans=await core.plans.list(),
        notice=notice,
        thresholds=core.settings.reputation,
    )


@router.post("/accounts/{account_id}/plan")
async def assign_plan(request: Request, account_id: Id, who: Identity = Depends(operator)) -> Response:
    core = get_core(request)
    if await core.accounts.get(account_id) is None:
        raise PageError(404, "No such account", f"There is no account {account_id}.")
    name = str((await request.form()).get("plan") or "")
    try:
        await core.plans.assign(account_id, name or None, actor(who, request))
    except PlanError as exc:
        raise PageError(422, "Unknown plan", str(exc)) from exc
    return RedirectResponse(f"/app/admin?notice=Plan+of+account+{account_id}+set", status_code=303)


@router.post("/accounts/{account_id}/view")
async def view_account(request: Request, account_id: Id, who: Identity = Depends(operator)) -> Response:
    """Look at the account's own pages, read only."""
    if not await get_core(request).users.inspect(who, account_id, actor=actor(who, request)):
        raise PageError(404, "No such account", f"There is no account {account_id}.")
    return RedirectResponse("/app/", status_code=303)


@router.post("/view/stop")
async def stop_viewing(request: Request, who: Identity = Depends(operator)) -> Response:
    await get_core(request).users.stop_inspecting(who)
    return RedirectResponse("/app/admin", status_code=303)


@router.get("/reviews", response_class=HTMLResponse)
async def reviews(request: Request, state: str = "open", who: Identity = Depends(operator)) -> Response:
    if state not in ("open", "approved", "rejected", "all"):
        state = "open"
    core = get_core(request)
    rows = await core.reputation.reviews(None if state == "all" else state)
    names = await core.accounts.names(r.account_id for r in rows)
    return page(request, "admin_reviews.html", who, title="Reviews", reviews=rows, state=state, names=names)


@router.get("/reviews/{review_id}", response_class=HTMLResponse)
async def review(
    request: Request, review_id: Id, notice: str = "", who: Identity = Depends(operator)
) -> Response:
    core = get_core(request)
    try:
        detail = await core.reputation.review(review_id)
    except ReviewError as exc:
        raise PageError(exc.status, "No such review", str(exc)) from exc
    held = await core.messages.events(EventFilter(detail["account_id"], types=["held"]), 50)
    terminated = detail.get("terminated") or {}
    actors = await core.users.actor_names(
        [a["actor"] for a in detail["audit"]] + ([terminated["by"]] if terminated.get("by") else [])
    )
    return page(
        request,
        "admin_review.html",
        who,
        title=f"Review {review_id}",
        review=detail,
        questions=QUESTIONS,
        held=held,
        actors=actors,
        thresholds=core.settings.reputation,
        notice=notice,
    )


@router.post("/reviews/{review_id}/{decision}")
async def decide(
    request: Request, review_id: Id, decision: str, who: Identity = Depends(operator)
) -> Response:
    core = get_core(request)
    note = str((await request.form()).get("note") or "")[:4000]
    if decision not in ("approve", "reject"):
        raise PageError(404, "Unknown decision", "Approve or reject.")
    action = core.reputation.approve if decision == "approve" else core.reputation.reject
    try:
        result = await action(review_id, actor(who, request), note)
    except ReviewError as exc:
        raise PageError(exc.status, "Cannot decide", str(exc)) from exc
    return RedirectResponse(
        f"/app/admin/reviews/{review_id}?notice=Review+{result['state']}", status_code=303
    )


@router.get("/abuse", response_class=HTMLResponse)
async def abuse_desk(
    request: Request, show: str = "all", notice: str = "", who: Identity = Depends(operator)
) -> Response:
    show = show if show in ("all", "inbox", "matched") else "all"
    core = get_core(request)
    matched = {"all": None, "inbox": False, "matched": True}[show]
    reports = await core.abuse.reports(matched=matched, limit=200)
    names = await core.accounts.names(r.account_id for r in reports)
    return page(
        request,
        "admin_abuse.html",
        who,
        title="Abuse desk",
        reports=reports,
        show=show,
        names=names,
        notice=notice,
    )


@router.post("/accounts/{account_id}/terminate")
async def terminate(request: Request, account_id: Id, who: Identity = Depends(operator)) -> Response:
    form = await request.form()
    reason = " ".join(str(form.get("reason") or "").split())[:2000]
    if not reason or not reason.isprintable():
        raise PageError(422, "A reason is needed", "Say in one line why the account is terminated.")
    try:
        await get_core(request).terminations.terminate(account_id, actor(who, request), reason)
    except TerminationError as exc:
        raise PageError(exc.status, "Cannot terminate", str(exc)) from exc
    review_id = parse_id(str(form.get("review_id") or ""))
    back = f"/app/admin/reviews/{review_id}" if review_id is not None else "/app/admin/abuse"
    return RedirectResponse(f"{back}?notice=Account+{account_id}+terminated", status_code=303)


@router.get("/suppressions", response_class=HTMLResponse)
async def global_suppressions(request: Request, q: str = "", who: Identity = Depends(operator)) -> Response:
    return await suppressions_page(request, who, None, q)


@router.post("/suppressions", response_class=HTMLResponse)
async def global_add(request: Request, who: Identity = Depends(operator)) -> Response:
    return await add_suppression(request, who, None, actor(who, request))


@router.post("/suppressions/remove", response_class=HTMLResponse)
async def global_remove(request: Request, who: Identity = Depends(operator)) -> Response:
    return await remove_suppression(request, who, None, actor(who, request))


@router.get("/suppressions/export.csv")
async def global_export(request: Request, who: Identity = Depends(operator)) -> Response:
    return await export_suppressions(request, None, "global-suppressions")


@router.get("/providers", response_class=HTMLResponse)
async def providers(request: Request, hours: int = 24, who: Identity = Depends(operator)) -> Response:
    hours = hours if hours in (1, 24, 168) else 24
    core = get_core(request)
    now = core.clock.now()
    figures = await core.provider_figures(now - timedelta(hours=hours), now + timedelta(seconds=1))
    return page(
        request,
        "admin_providers.html",
        who,
        title="Providers and queue",
        figures=figures,
        depth=await core.queue_depth(),
        hours=hours,
    )


def _optional_int(text: str, name: str) -> int | None:
    text = text.strip().replace(",", "").replace("_", "")
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise PlanError(f"{name}: a whole number below 10^18, or empty for no limit")
    return int(text)


@router.get("/plans", response_class=HTMLResponse)
async def plans_page(request: Request, who: Identity = Depends(operator)) -> Response:
    rows = await get_core(request).plans.list()
    return page(request, "admin_plans.html", who, title="Plans", plans=rows, form={})


@router.post("/plans", response_class=HTMLResponse)
async def create_plan(request: Request, who: Identity = Depends(operator)) -> Response:
    core = get_core(request)
    form = {k: str(v) for k, v in (await request.form()).items() if k != "csrf_token"}
    try:
        await core.plans.create(
            form.get("name", ""),
            messages_per_month=_optional_int(form.get("messages_per_month", ""), "messages per month"),
            messages_per_day=_optional_int(form.get("messages_per_day", ""), "messages per day"),
            contacts=_optional_int(form.get("contacts", ""), "contacts"),
            dedicated_pool=form.get("dedicated_pool") == "yes",
            actor=actor(who, request),
        )
    except PlanError as exc:
        rows = await core.plans.list()
        return page(
            request, "admin_plans.html", who, status=422, title="Plans", plans=rows, form=form, error=str(exc)
        )
    rows = await core.plans.list()
    return page(
        request,
        "admin_plans.html",
        who,
        status=201,
        title="Plans",
        plans=rows,
        form={},
        notice="Plan created.",
    )
