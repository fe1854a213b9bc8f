"""`/v1/smtp-credentials`: usernames and passwords for mail clients and devices sending through the relay."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from estafeta.api.deps import account_id, platform
from estafeta.api.problems import Problem
from estafeta.smtp.credentials import create_smtp_credential
from estafeta.store import smtp_credentials as store

if TYPE_CHECKING:
    from estafeta.platform import Platform

router = APIRouter(prefix="/v1/smtp-credentials", tags=["smtp credentials"])


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
async def create(
    account: int = Depends(account_id), plat: Platform = Depends(platform)
) -> SmtpCredentialCreated:
    new = await create_smtp_credential(plat.db, account, plat.clock.now())
    return SmtpCredentialCreated(username=new.username, password=new.password, created_at=new.created_at)


@router.get("", response_model=SmtpCredentialList, summary="List SMTP credentials (without passwords)")
async def list_credentials(
    account: int = Depends(account_id), plat: Platform = Depends(platform)
) -> SmtpCredentialList:
    rows = await plat.db.run(store.list_credentials, account)
    return SmtpCredentialList(
        data=[
            SmtpCredentialOut(username=r.username, created_at=r.created_at, revoked_at=r.revoked_at)
            for r in rows
        ]
    )


@router.delete("/{username}", status_code=204, response_class=Response, summary="Revoke an SMTP credential")
async def revoke(
    username: str, account: int = Depends(account_id), plat: Platform = Depends(platform)
) -> Response:
    if not await plat.smtp_credentials.revoke(account, username, plat.clock.now()):
        raise Problem(404, f"no active SMTP credential {username} in this account")
    return Response(status_code=204)
