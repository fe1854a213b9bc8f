"""The public pages of list mail, served without an API key and without cookies.

* `POST /u/{token}` with the body `List-Unsubscribe=One-Click`: RFC 8058 one-click unsubscribe, what
  mailbox providers send; 200, idempotent.
* `GET /u/{token}`: the page behind the body's unsubscribe link; it has *already* unsubscribed when it shows
  (no input asked), and offers leaving every list and the preference center.
* `GET|POST /p/{token}`: the preference center, every list the address is on.
* `GET|POST /f/{public_id}`: the hosted subscription form; its consent box is never pre-checked.
* `GET /confirm/{token}`: double opt-in (and re-confirmation) links.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, PlainTextResponse

from estafeta.api.deps import get_core
from estafeta.api.route import ApiRoute
from estafeta.audience.consent import ConsentRecord
from estafeta.audience.contacts import contact_email
from estafeta.audience.lists import AudienceError
from estafeta.audience.service import ListRow
from estafeta.core import Core
from estafeta.ids import parse_id
from estafeta.web.pages import page

router = APIRouter(
    route_class=ApiRoute,
    tags=["public pages"],
    responses={404: {"description": "unknown or expired link", "content": {"text/html": {}}}},
)

ONE_CLICK = "List-Unsubscribe=One-Click"
_GONE = {"title": "This link does not work", "text": "The link is not valid (or has expired)."}


def _invalid() -> HTMLResponse:
    return page("message.html", 404, **_GONE)


@router.post(
    "/u/{token}",
    response_class=PlainTextResponse,
    summary="One-click unsubscribe (RFC 8058)",
    description=f"The body must be `{ONE_CLICK}` (form-encoded). No login, no cookies; repeating it is "
    "harmless.",
    responses={
        400: {"description": "not a one-click request", "content": {"text/plain": {}}},
        404: {"description": "unknown link", "content": {"text/plain": {}}},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["List-Unsubscribe"],
                        "properties": {"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}},
                    }
                }
            },
        }
    },
)
async def one_click(token: str, request: Request, core: Core = Depends(get_core)) -> PlainTextResponse:
    form = await request.form()
    if form.get("List-Unsubscribe") != "One-Click":
        return PlainTextResponse(f"the body must be {ONE_CLICK}\n", status_code=400)
    outcome = await core.audience.unsubscriber.by_token(token, "one-click")
    if outcome is None:
        return PlainTextResponse("unknown unsubscribe link\n", status_code=404)
    return PlainTextResponse("unsubscribed\n")


@router.get("/u/{token}", response_class=HTMLResponse, summary="Unsubscribe page (already unsubscribed)")
async def unsubscribe_page(token: str, core: Core = Depends(get_core)) -> HTMLResponse:
    outcome = await core.audience.unsubscriber.by_token(token, "page")
    found = core.audience.tokens.read_unsubscribe(token)
    if outcome is None or found is None:
        return _invalid()
    subscription = await core.audience.subscription(found.contact_id, found.list_id)
    return page(
        "unsubscribed.html",
        title="You are unsubscribed",
        email=outcome.email,
        list_name=subscription.list_name if subscription else "",
        everything=False,
        all_url=f"{core.urls.public()}/u/{token}/all",
        preferences_url=core.audience.links.preferences_url(found.contact_id),
    )


@router.post("/u/{token}/all", response_class=HTMLResponse, summary="Unsubscribe from every list")
async def unsubscribe_everything(token: str, core: Core = Depends(get_core)) -> HTMLResponse:
    found = core.audience.tokens.read_unsubscribe(token)
    outcome = await core.audience.unsubscriber.everything(found.contact_id, "page") if found else None
    if outcome is None or found is None:
        return _invalid()
    return page(
        "unsubscribed.html",
        title="You are unsubscribed from everything",
        email=outcome.email,
        everything=True,
        preferences_url=core.audience.links.preferences_url(found.contact_id),
    )


async def _preferences_page(core: Core, contact_id: int, saved: bool = False) -> HTMLResponse:
    prefs = await core.audience.unsubscriber.preferences(contact_id)
    if prefs is None:
        return _invalid()
    return page(
        "preferences.html",
        title="Your subscriptions",
        email=prefs.email,
        subscriptions=prefs.subscriptions,
        unsubscribed_from_all=prefs.unsubscribed_from_all,
        saved=saved,
    )


@router.get("/p/{token}", response_class=HTMLResponse, summary="Preference center")
async def preferences(token: str, core: Core = Depends(get_core)) -> HTMLResponse:
    contact_id = core.audience.tokens.read_preferences(token)
    return _invalid() if contact_id is None else await _preferences_page(core, contact_id)


@router.post("/p/{token}", response_class=HTMLResponse, summary="Save preferences")
async def save_preferences(token: str, request: Request, core: Core = Depends(get_core)) -> HTMLResponse:
    contact_id = core.audience.tokens.read_preferences(token)
    if contact_id is None:
        return _invalid()
    form = await request.form()
    if form.get("action") == "all":
        await core.audience.unsubscriber.everything(contact_id, "preferences")
    else:
        keep = {i for v in form.getlist("list") if isinstance(v, str) and (i := parse_id(v)) is not None}
        await core.audience.unsubscriber.set_preferences(contact_id, keep)
    return await _preferences_page(core, contact_id, saved=True)


def _form(mailing_list: ListRow, status: int = 200, error: str = "", email: str = "") -> HTMLResponse:
    return page(
        "subscribe.html",
        status,
        title=f"Subscribe to {mailing_list.name}",
        list_name=mailing_list.name,
        double_opt_in=mailing_list.double_opt_in,
        error=error,
        email=email,
    )


@router.get("/f/{public_id}", response_class=HTMLResponse, summary="Hosted subscription form")
async def subscription_form(public_id: str, core: Core = Depends(get_core)) -> HTMLResponse:
    mailing_list = await core.audience.public_list(public_id)
    return _invalid() if mailing_list is None else _form(mailing_list)


@router.post("/f/{public_id}", response_class=HTMLResponse, summary="Subscribe through the hosted form")
async def subscribe(public_id: str, request: Request, core: Core = Depends(get_core)) -> HTMLResponse:
    mailing_list = await core.audience.public_list(public_id)
    if mailing_list is None:
        return _invalid()
    form = await request.form()
    raw_email = str(form.get("email") or "")
    if form.get("consent") != "yes":
        return _form(mailing_list, 422, "Please tick the box to say you want these emails.", raw_email)
    try:
        email = contact_email(raw_email)
    except AudienceError as exc:
        return _form(mailing_list, 422, exc.reason, raw_email)
    record = ConsentRecord(f"hosted form /f/{public_id}")
    result = await core.audience.subscribe(
        mailing_list.account_id, mailing_list, email, {}, record, renew=True
    )
    if result.status == "unconfirmed":
        text = f"We sent a message to {email}. Follow its link to confirm your subscription."
        return page("message.html", title="Check your inbox", text=text)
    return page("message.html", title="You are subscribed", text=f"{email} will receive {mailing_list.name}.")


@router.get("/confirm/{token}", response_class=HTMLResponse, summary="Confirm a subscription")
async def confirm(token: str, core: Core = Depends(get_core)) -> HTMLResponse:
    confirmed = await core.audience.consent.confirm(token)
    if confirmed is None:
        return _invalid()
    title = "You are subscribed" if confirmed.previous_status == "unconfirmed" else "Thank you"
    return page("message.html", title=title, text=f"Your subscription to {confirmed.list_name} is confirmed.")
