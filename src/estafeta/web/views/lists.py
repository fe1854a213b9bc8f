"""Lists and their contacts: create a list, search and remove contacts, import contacts from CSV.

Everything goes through the core's audience service, so a list, a contact or an import is checked here
exactly as through `/v1/lists` and `estafeta lists`: the same From check, the same per-row validation
report and bought-list flags, double opt-in (imported people confirm by mail unless the form says they
confirmed already), the plan's contact limit.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import UploadFile
from starlette.responses import HTMLResponse, RedirectResponse, Response

from estafeta.accept import AcceptError
from estafeta.api.params import AfterId, Id
from estafeta.audience.consent import ConsentRecord
from estafeta.audience.importer import CsvError, ImportReport
from estafeta.audience.lists import AudienceError
from estafeta.audience.service import ListRow
from estafeta.users import Identity
from estafeta.web.render import page
from estafeta.web.session import PageError, actor, get_core, reader, sender

router = APIRouter()
CONTACTS_PAGE = 100
STATUSES = ("", "unconfirmed", "subscribed", "unsubscribed")
MAX_IMPORT_BYTES = 20 * 1024 * 1024


async def _lists_page(request: Request, who: Identity, *, status: int = 200, **extra: object) -> Response:
    core = get_core(request)
    assert who.account_id is not None
    rows = await core.audience.lists(who.account_id)
    return page(
        request,
        "lists.html",
        who,
        status=status,
        title="Lists",
        lists=rows,
        form_url=core.audience.links.form_url,
        form=extra.pop("form", {}),
        **extra,
    )


@router.get("/lists", response_class=HTMLResponse)
async def lists(request: Request, who: Identity = Depends(reader)) -> Response:
    return await _lists_page(request, who)


@router.post("/lists", response_class=HTMLResponse)
async def create_list(request: Request, who: Identity = Depends(sender)) -> Response:
    assert who.account_id is not None
    form = {k: str(v) for k, v in (await request.form()).items() if k != "csrf_token"}
    try:
        row = await get_core(request).audience.create_list(
            who.account_id,
            form.get("name", ""),
            form.get("from_address", ""),
            double_opt_in=form.get("double_opt_in") == "yes",
        )
    except AudienceError as exc:
        return await _lists_page(
            request, who, status=exc.status, form=form, error=f"{exc.field}: {exc.reason}"
        )
    return RedirectResponse(f"/app/lists/{row.id}?notice=List+created", status_code=303)


async def _list(request: Request, who: Identity, list_id: int) -> ListRow:
    assert who.account_id is not None
    try:
        return await get_core(request).audience.get_list(who.account_id, list_id)
    except AudienceError as exc:
        raise PageError(404, "No such list", f"There is no list {list_id} in this account.") from exc


async def _contacts_page(
    request: Request,
    who: Identity,
    mailing_list: ListRow,
    *,
    status: str = "",
    q: str = "",
    after: int = 0,
    code: int = 200,
    **extra: object,
) -> Response:
    core = get_core(request)
    assert who.account_id is not None
    if status not in STATUSES:
        raise PageError(422, "Unknown status", "status: unconfirmed, subscribed or unsubscribed")
    q = q.strip()[:320]
    rows = await core.audience.contacts(
        mailing_list.id, status=status or None, search=q or None, after_id=after, limit=CONTACTS_PAGE + 1
    )
    next_url = ""
    if len(rows) > CONTACTS_PAGE:
        rows = rows[:CONTACTS_PAGE]
        next_url = f"/app/lists/{mailing_list.id}?status={status}&q={q}&after={rows[-1][0].id}"
    segments = [
        (s, await core.audience.segment_size(s))
        for s in await core.audience.segments(who.account_id, mailing_list.id)
    ]
    return page(
        request,
        "contacts.html",
        who,
        status=code,
        title=mailing_list.name,
        mailing_list=mailing_list,
        form_url=core.audience.links.form_url(mailing_list.public_id),
        rows=rows,
        shown=status,
        q=q,
        next_url=next_url,
        segments=segments,
        **extra,
    )


@router.get("/lists/{list_id}", response_class=HTMLResponse)
async def contacts(
    request: Request,
    list_id: Id,
    status: str = "",
    q: str = "",
    after: AfterId = 0,
    notice: str = "",
    who: Identity = Depends(reader),
) -> Response:
    mailing_list = await _list(request, who, list_id)
    return await _contacts_page(request, who, mailing_list, status=status, q=q, after=after, notice=notice)


@router.post("/lists/{list_id}/contacts/{contact_id}/remove", response_class=HTMLResponse)
async def remove_contact(
    request: Request, list_id: Id, contact_id: Id, who: Identity = Depends(sender)
) -> Response:
    assert who.account_id is not None
    mailing_list = await _list(request, who, list_id)
    form = await request.form()
    try:
        outcome = await get_core(request).audience.remove_contact(
            who.account_id, list_id, contact_id, actor(who, request).name
        )
    except AudienceError as exc:
        raise PageError(exc.status, "No such contact", exc.reason) from exc
    mailing_list = await _list(request, who, list_id)  # fresh counts
    notice = (
        f"{outcome.email} removed from {mailing_list.name}; an import will not add them back."
        if outcome.lists
        else f"{outcome.email} had left {mailing_list.name} already."
    )
    return await _contacts_page(
        request,
        who,
        mailing_list,
        status=str(form.get("status") or ""),
        q=str(form.get("q") or ""),
        notice=notice,
    )


def _report_rows(report: ImportReport) -> list[tuple[str, int]]:
    return [
        ("Rows read", report.rows),
        ("Added", report.added),
        ("Already on the list", report.already_on_list),
        ("Kept unsubscribed", report.kept_unsubscribed),
        ("Waiting for confirmation by mail", report.awaiting_confirmation),
        ("Duplicates in the file", report.duplicates),
        ("Invalid rows", len(report.invalid)),
    ]


@router.post("/lists/{list_id}/imports", response_class=HTMLResponse)
async def import_contacts(request: Request, list_id: Id, who: Identity = Depends(sender)) -> Response:
    assert who.account_id is not None
    mailing_list = await _list(request, who, list_id)
    form = await request.form()
    upload = form.get("file")
    source = " ".join(str(form.get("consent_source") or "").split())[:200]
    confirmed = form.get("confirmed") == "yes"

    async def refused(reason: str, status: int = 422) -> Response:
        return await _contacts_page(request, who, mailing_list, code=status, error=reason)

    if not isinstance(upload, UploadFile) or not upload.filename:
        return await refused("file: choose a CSV file with an email column")
    if not source:
        return await refused("consent source: say where these people agreed to get your mail")
    raw = await upload.read(MAX_IMPORT_BYTES + 1)
    if len(raw) > MAX_IMPORT_BYTES:
        return await refused(f"file: at most {MAX_IMPORT_BYTES // (1024 * 1024)} MB per import", 413)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return await refused(f"file: the CSV must be UTF-8 (byte {exc.start} is not)")
    try:
        report = await get_core(request).audience.import_csv(
            who.account_id, mailing_list, text, ConsentRecord(source, None, confirmed)
        )
    except CsvError as exc:
        return await refused(f"file: {exc}")
    except AudienceError as exc:  # over the plan's contacts: earlier chunks are kept
        return await refused(f"{exc.field}: {exc.reason}", exc.status)
    except AcceptError as exc:  # the confirmation mails were refused (e.g. the account is paused)
        return await refused(f"confirmation mail: {exc.reason}", exc.status)
    mailing_list = await _list(request, who, list_id)  # fresh counts
    return await _contacts_page(
        request,
        who,
        mailing_list,
        report=report,
        report_rows=_report_rows(report),
        notice=f"Import of {upload.filename} done: {report.added} added.",
    )
