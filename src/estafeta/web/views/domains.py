"""Sending domains: add one (its DKIM key is made and the records to publish are shown) and see, record by
record, what DNS publishes now."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from estafeta.domains import ALGORITHMS, DomainError, DomainRow
from estafeta.users import Identity
from estafeta.verification.records import DomainReport
from estafeta.verification.service import DomainStatus
from estafeta.web.render import page
from estafeta.web.session import PageError, actor, get_core, owner, reader, sender

router = APIRouter()


async def _domains_page(request: Request, who: Identity, *, status: int = 200, **extra: object) -> Response:
    core = get_core(request)
    rows = await core.domains.list(who.account_id)

    async def checked_row(row: DomainRow) -> tuple[DomainRow, DomainReport, DomainStatus]:
        # The last stored check is shown (Verify now refreshes it); DNS is asked only for a domain never
        # checked, so a page load never waits on every domain's lookups.
        status = await core.verification.status(row.name, row.account_id)
        return row, status.report or await core.dns_status(row), status

    checked = await asyncio.gather(*(checked_row(row) for row in rows))
    return page(
        request,
        "domains.html",
        who,
        status=status,
        title="Domains",
        domains=checked,
        algorithms=ALGORITHMS,
        default_algorithm=core.settings.dkim_algorithm,
        **extra,
    )


@router.get("/domains", response_class=HTMLResponse)
async def domains(request: Request, notice: str = "", who: Identity = Depends(reader)) -> Response:
    return await _domains_page(request, who, notice=notice)


@router.post("/domains", response_class=HTMLResponse)
async def add_domain(request: Request, who: Identity = Depends(owner)) -> Response:
    assert who.account_id is not None
    form = await request.form()
    name = str(form.get("name") or "")
    algorithm = str(form.get("algorithm") or "") or None
    try:
        row, _ = await get_core(request).domains.add(
            who.account_id, name, algorithm, actor=actor(who, request)
        )
    except DomainError as exc:
        return await _domains_page(request, who, status=422, error=str(exc), name=name)
    return RedirectResponse(
        f"/app/domains?notice=Domain+{row.name}+added:+publish+its+records#d-{row.id}", status_code=303
    )


@router.post("/domains/{name}/verify")
async def verify(request: Request, name: str, who: Identity = Depends(sender)) -> Response:
    """Check the domain's records now and keep the outcome (as `POST /v1/domains/{d}/verify`)."""
    try:
        status = await get_core(request).verification.verify(name, who.account_id, actor=actor(who, request))
    except DomainError as exc:
        raise PageError(404, "No such domain", str(exc)) from exc
    return RedirectResponse(
        f"/app/domains?notice={status.domain}+is+{status.state}#d-{status.domain}", status_code=303
    )
