"""Request dependencies: the platform object and the authenticated account."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from estafeta.api.problems import Problem

if TYPE_CHECKING:
    from estafeta.platform import Platform

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer est_…`")


def platform(request: Request) -> Platform:
    return request.app.state.platform  # type: ignore[no-any-return]


async def account_id(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> int:
    """The account of the API key in the Authorization header; 401 otherwise."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise Problem(401, "send an API key as `Authorization: Bearer <key>`", headers=challenge)
    found = await platform(request).api_keys.account_for(credentials.credentials)
    if found is None:
        raise Problem(401, "the API key is unknown or revoked", headers=challenge)
    return found
