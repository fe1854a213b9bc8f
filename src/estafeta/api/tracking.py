"""Tracking: the public pixel and click redirect (`/t/o/…`, `/t/c/…`), and an account's tracking switches.

The public routes need no API key: they are what recipients' mail clients fetch, usually through the
platform's tracking domain. A token that is not one of ours gets a 404, never a redirect.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from estafeta.api.deps import account_id, get_core
from estafeta.api.problems import Problem
from estafeta.api.route import ApiRoute
from estafeta.core import Core
from estafeta.tracking import PIXEL_GIF, Hit, TrackingChoice

public_router = APIRouter(route_class=ApiRoute, prefix="/t", tags=["tracking"])
router = APIRouter(route_class=ApiRoute, prefix="/v1/tracking", tags=["tracking"])

_NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, private", "Pragma": "no-cache"}


async def _record(core: Core, hit: Hit, request: Request) -> None:
    await core.tracker.record(hit, request.headers.get("user-agent", ""), request.method)


@public_router.head("/o/{token}", include_in_schema=False)
@public_router.get(
    "/o/{token}",
    response_class=Response,
    summary="Open pixel",
    responses={200: {"content": {"image/gif": {}}}},
)
async def open_pixel(token: str, request: Request, core: Core = Depends(get_core)) -> Response:
    hit = core.tracker.tokens.read(token, "open")
    if hit is None:
        raise Problem(404, "no such tracking link")
    await _record(core, hit, request)
    return Response(PIXEL_GIF, media_type="image/gif", headers=_NO_CACHE)


@public_router.head("/c/{token}", include_in_schema=False, response_class=RedirectResponse, status_code=302)
@public_router.get(
    "/c/{token}",
    response_class=RedirectResponse,
    status_code=302,
    summary="Click redirect",
    responses={302: {"description": "to the link's original URL"}},
)
async def click(token: str, request: Request, core: Core = Depends(get_core)) -> RedirectResponse:
    hit = core.tracker.tokens.read(token, "click")
    if hit is None or hit.url is None:
        raise Problem(404, "no such tracking link")
    await _record(core, hit, request)
    return RedirectResponse(hit.url, status_code=302, headers={**_NO_CACHE, "Referrer-Policy": "no-referrer"})


class StreamTrackingIO(BaseModel):
    model_config = ConfigDict(extra="forbid")
    opens: StrictBool = Field(description="add an open pixel to HTML mail")
    clicks: StrictBool = Field(description="send http(s) links in HTML mail through the click redirect")


class TrackingOut(BaseModel):
    active: bool = Field(description="false while the platform has no tracking domain configured")
    base_url: str | None
    transactional: StreamTrackingIO
    broadcast: StreamTrackingIO


async def _view(core: Core, account: int) -> TrackingOut:
    found = await core.tracker.preferences(account)
    base = core.tracker.base_url
    return TrackingOut(
        active=base is not None,
        base_url=base,
        **{stream: StreamTrackingIO(opens=c.opens, clicks=c.clicks) for stream, c in found.items()},
    )


@router.get("", response_model=TrackingOut, summary="The account's tracking defaults per stream")
async def get_tracking(account: int = Depends(account_id), core: Core = Depends(get_core)) -> TrackingOut:
    return await _view(core, account)


@router.put(
    "/{stream}",
    response_model=TrackingOut,
    summary="Switch open/click tracking for one stream",
    description="Messages may still override this with `tracking` in `POST /v1/messages`.",
)
async def set_tracking(
    stream: Literal["transactional", "broadcast"],
    body: StreamTrackingIO,
    account: int = Depends(account_id),
    core: Core = Depends(get_core),
) -> TrackingOut:
    await core.tracker.set_preference(account, stream, TrackingChoice(body.opens, body.clicks))
    return await _view(core, account)
