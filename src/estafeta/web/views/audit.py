"""The operators' audit log page: who did what to which account, when and from where, newest first."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, Response

from estafeta.accounts import AccountError
from estafeta.audit import AuditFilter
from estafeta.ids import parse_id
from estafeta.users import Identity
from estafeta.web.render import page
from estafeta.web.session import PageError, get_core, operator
from estafeta.web.views.messages import day_field

router = APIRouter(prefix="/admin")

PAGE = 50
_ACTION = re.compile(r"[a-z_]+(\.[a-z_]+)*")


@router.get("/audit", response_class=HTMLResponse)
async def audit_log(
    request: Request,
    account: str = "",
    action: str = "",
    actor: str = "",
    since: str = "",
    until: str = "",
    before: str = "",
    who: Identity = Depends(operator),
) -> Response:
    core = get_core(request)
    account, action, actor = account.strip(), action.strip(), actor.strip()
    if action and not _ACTION.fullmatch(action):
        raise PageError(422, "Invalid action", "action: dotted words, e.g. review.approve or review")
    account_id = None
    if account:
        try:
            account_id = (await core.accounts.resolve(account)).id
        except AccountError as exc:
            raise PageError(422, "No such account", str(exc)) from exc
    until_day = day_field(until, "until")
    where = AuditFilter(
        account_id=account_id,
        action=action or None,
        actor=actor or None,
        since=day_field(since, "since"),
        until=until_day + timedelta(days=1) if until_day else None,  # the whole day named
    )
    rows = await core.audit.entries(where, before_id=parse_id(before) if before else None, limit=PAGE + 1)
    next_url = ""
    if len(rows) > PAGE:
        rows = rows[:PAGE]
        kept = [(k, v) for k, v in request.query_params.multi_items() if k != "before" and v]
        next_url = "/app/admin/audit?" + urlencode([*kept, ("before", str(rows[-1].id))])
    names = await core.accounts.names(r.account_id for r in rows)
    form = {"account": account, "action": action, "actor": actor, "since": since, "until": until}
    return page(
        request,
        "admin_audit.html",
        who,
        title="Audit log",
        rows=rows,
        names=names,
        form=form,
        next_url=next_url,
    )
