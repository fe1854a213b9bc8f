"""The account's team: members and their roles, invitations (owners change them).

An invitation is mailed to the person from the platform's own sender; its link is also shown, once, to
the owner who made it (to pass on if the mail does not arrive).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, Response

from estafeta.accept import AcceptError
from estafeta.api.params import Id
from estafeta.users import ROLES, Identity, UserError
from estafeta.web.render import page
from estafeta.web.session import PageError, actor, get_core, owner, reader

router = APIRouter()


async def _team_page(request: Request, who: Identity, *, status: int = 200, **extra: object) -> Response:
    assert who.account_id is not None
    users = get_core(request).users
    return page(
        request,
        "team.html",
        who,
        status=status,
        title="Team",
        members=await users.members(who.account_id),
        invitations=await users.invitations(who.account_id),
        roles=ROLES,
        **extra,
    )


def invitation_url(request: Request, token: str) -> str:
    base = get_core(request).settings.public_url or str(request.base_url).rstrip("/")
    return f"{base}/app/invite/{token}"


@router.get("/team", response_class=HTMLResponse)
async def team(request: Request, who: Identity = Depends(reader)) -> Response:
    return await _team_page(request, who)


@router.post("/team/invitations", response_class=HTMLResponse)
async def invite(request: Request, who: Identity = Depends(owner)) -> Response:
    assert who.account_id is not None
    form = await request.form()
    core = get_core(request)
    try:
        row, token = await core.users.invite(
            who.account_id,
            str(form.get("email") or ""),
            str(form.get("role") or ""),
            who.user.id,
            actor=actor(who, request),
        )
    except UserError as exc:
        return await _team_page(request, who, status=exc.status, error=exc.reason)
    link = invitation_url(request, token)
    notice = f"Invitation for {row.email} ({row.role}) created; "
    if form.get("mail") == "yes":
        try:
            await core.notices.invitation(row.email, who.account_name, row.role, link, who.user.email)
        except AcceptError as exc:
            notice += f"it could not be mailed ({exc.reason}): send them the link below."
        else:
            notice += "it was mailed to them; the link below is the same."
    else:
        notice += "send them the link below."
    return await _team_page(request, who, status=201, invitation_link=link, notice=notice)


@router.post("/team/invitations/{invitation_id}/revoke", response_class=HTMLResponse)
async def revoke_invitation(request: Request, invitation_id: Id, who: Identity = Depends(owner)) -> Response:
    assert who.account_id is not None
    if not await get_core(request).users.revoke_invitation(
        who.account_id, invitation_id, actor=actor(who, request)
    ):
        raise PageError(
            404, "No such invitation", "There is no open invitation with that id in this account."
        )
    return await _team_page(request, who, notice="Invitation revoked.")


@router.post("/team/members/{user_id}", response_class=HTMLResponse)
async def change_member(request: Request, user_id: Id, who: Identity = Depends(owner)) -> Response:
    assert who.account_id is not None
    form = await request.form()
    users = get_core(request).users
    members = {m.user_id: m for m in await users.members(who.account_id)}
    if user_id not in members:
        raise PageError(404, "No such member", "That user is not a member of this account.")
    try:
        if form.get("action") == "remove":
            await users.remove_member(who.account_id, user_id, actor=actor(who, request))
            notice = f"{members[user_id].email} removed from the account."
        else:
            role = str(form.get("role") or "")
            if members[user_id].role == "owner" and role != "owner":
                owners = [m for m in members.values() if m.role == "owner"]
                if len(owners) == 1:
                    raise UserError("role", "the account's last owner stays an owner", status=409)
            await users.set_role(who.account_id, user_id, role, actor=actor(who, request))
            notice = f"{members[user_id].email} is now {role}."
    except UserError as exc:
        return await _team_page(request, who, status=exc.status, error=exc.reason)
    return await _team_page(request, who, notice=notice)
