"""`/v1/smtp-credentials`: usernames and passwords for mail clients and devices sending through the relay."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from estafeta.api.deps import Caller, full_account, full_caller, get_core
from estafeta.api.problems import Problem
from estafeta.api.route import ApiRoute

if TYPE_CHECKING:
    from estafeta.core import Core

router = APIRouter(route_class=ApiRoute, prefix="/v1/smtp-credentials", tags=["smtp credentials"])


class SmtpCredentialCreated(BaseModel):
    username: str
    password: str = Field(description="shown only in this response; store it in the mail client now")
    created_at: datetime


class SmtpCredentialOut(BaseModel):
    username: str
    created_at: datetime
    revoked_at: datetime | None


class SmtpCredentialList(BaseModel):
    data: list[SmtpCredentialOut]


@router.post(
    "",
    status_code=201,
    response_model=SmtpCredentialCreated,
    summary="Create an SMTP credential",
    description=(
        "Creates a username and password for the SMTP relay (port 587 with STARTTLS or 465 with TLS, "
        "AUTH PLAIN or LOGIN). The password is returned once and only its hash is kept."
    ),
)
async def create(who: Caller = Depends(full_caller), core: Core = Depends(get_core)) -> SmtpCredentialCreated:
    new = await core.smtp_credentials.create(who.account_id, actor=who.actor)
    return SmtpCredentialCreated(username=new.username, password=new.password, created_at=new.created_at)


@router.get("", response_model=SmtpCredentialList, summary="List SMTP credentials (without passwords)")
async def list_credentials(
    account: int = Depends(full_account), core: Core = Depends(get_core)
) -> SmtpCredentialList:
    rows = await core.smtp_credentials.list(account)
    return SmtpCredentialList(
        data=[
            SmtpCredentialOut(username=r.username, created_at=r.created_at, revoked_at=r.revoked_at)
            for r in rows
        ]
    )


@router.delete("/{username}", status_code=204, response_class=Response, summary="Revoke an SMTP credential")
async def revoke(
    username: str, who: Caller = Depends(full_caller), core: Core = Depends(get_core)
) -> Response:
    if not await core.smtp_credentials.revoke(who.account_id, username, actor=who.actor):
        raise Problem(404, f"no active SMTP credential {username} in this account")
    return Response(status_code=204)
