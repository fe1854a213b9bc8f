"""Request dependencies: the service core, the authenticated account, the platform operator."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from estafeta.api.problems import Problem
from estafeta.auth import split_token
from estafeta.limits import LimitsUnavailable

if TYPE_CHECKING:
    from estafeta.core import Core

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer est_…`")


def get_core(request: Request) -> Core:
    return request.app.state.core  # type: ignore[no-any-return]


async def account_id(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> int:
    """The account of the API key in the Authorization header (401 otherwise), within its request rate
    (429 otherwise)."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise Problem(401, "send an API key as `Authorization: Bearer <key>`", headers=challenge)
    core = get_core(request)
    found = await core.api_keys.account_for(credentials.credentials)
    if found is None:
        raise Problem(401, "the API key is unknown or revoked", headers=challenge)
    await _within_rate(core, found)
    return found


async def _within_rate(core: Core, account: int) -> None:
    """Spend one request of the account's `api.rate_per_second` (shared by every node with Redis)."""
    api = core.settings.api
    if api.rate_per_second <= 0:
        return
    try:
        wait = await core.limits.take(f"api:{account}", api.rate_per_second, api.rate_burst)
    except LimitsUnavailable as exc:
        raise Problem(
            503, "request limits cannot be checked right now; try again shortly", headers={"Retry-After": "1"}
        ) from exc
    if wait > 0:
        raise Problem(
            429,
            f"this account may make {api.rate_per_second:g} requests per second (bursts of "
            f"{api.rate_burst}); try again in {wait:.2f} seconds",
            headers={"Retry-After": str(math.ceil(wait))},
            kind="rate-limit",
        )


@dataclass(frozen=True)
class Caller:
    """An authenticated account and how audit rows name the key it used (`api:<key prefix>`)."""

    account_id: int
    actor: str


async def caller(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Caller:
    found = await account_id(request, credentials)
    assert credentials is not None
    parts = split_token(credentials.credentials)
    return Caller(found, f"api:{parts[0] if parts else '?'}")


async def admin_actor(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> str:
    """`admin:<key prefix>` for a platform-admin key; 403 for an account API key, 401 for anything else."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise Problem(401, "send a platform-admin key as `Authorization: Bearer <key>`", headers=challenge)
    core = get_core(request)
    prefix = await core.admin_keys.prefix_for(credentials.credentials)
    if prefix is not None:
        return f"admin:{prefix}"
    if await core.api_keys.account_for(credentials.credentials) is not None:
        raise Problem(403, "only a platform-admin key may do this (`estafeta admin create-key`)")
    raise Problem(401, "the admin key is unknown or revoked", headers=challenge)
