"""Request dependencies: the service core, the authenticated account, the platform operator.

API keys are scoped (`estafeta.auth.SCOPES`). A route names what it needs by the dependency it uses:
`account_id`/`caller` need `read` for GET and `full` for anything else; `sending_account` needs `send`
(sending messages and campaigns); `full_account`/`full_caller` need `full` whatever the method (keys,
webhooks and SMTP credentials, whose answers carry secrets). A key without the scope gets a 403 naming it.

Every API route runs its key check before its body is read (`estafeta.api.route`), then again as a
dependency: the answer of the first check is kept on the request, so the key is looked up and counted
against the account's request rate once.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from estafeta.api.problems import Problem
from estafeta.audit import Actor, request_origin
from estafeta.auth import SCOPES, Grant
from estafeta.limits import LimitsUnavailable

if TYPE_CHECKING:
    from estafeta.core import Core

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer est_…`")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_GRANT = "estafeta.grant"
_ADMIN = "estafeta.admin"


def get_core(request: Request) -> Core:
    return request.app.state.core  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Caller:
    """An authenticated account and how audit rows name the key it used (`api:<key prefix>`)."""

    account_id: int
    actor: Actor


async def _granted(request: Request, credentials: HTTPAuthorizationCredentials | None, need: str) -> Grant:
    """The grant of the API key in the Authorization header: 401 without a valid key, 403 when its scope
    does not cover `need`, 429 past the account's request rate."""
    grant: Grant | None = request.scope.get(_GRANT)
    if grant is None:
        grant = await _grant(request, credentials)
        request.scope[_GRANT] = grant
    if not grant.allows(need):
        scopes = " or ".join(f"`{s}`" for s in sorted(SCOPES[need]))
        raise Problem(
            403,
            f"this API key's scope is `{grant.scope}`; this request needs the `{need}` scope (a key with "
            f"scope {scopes})",
            kind="missing-scope",
        )
    return grant


async def _grant(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Grant:
    if credentials is None:
        raise Problem(401, "send an API key as `Authorization: Bearer <key>`", headers=_CHALLENGE)
    grant = await get_core(request).api_keys.grant_for(credentials.credentials)
    if grant is None:
        raise Problem(401, "the API key is unknown or revoked", headers=_CHALLENGE)
    await _within_rate(get_core(request), grant.account_id)
    return grant


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


def _by_method(request: Request) -> str:
    return "read" if request.method in ("GET", "HEAD") else "full"


async def account_id(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> int:
    """The key's account; scope `read` for GET, `full` otherwise."""
    return (await _granted(request, credentials, _by_method(request))).account_id


async def caller(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Caller:
    grant = await _granted(request, credentials, _by_method(request))
    return Caller(grant.account_id, Actor.api_key(grant.prefix, request_origin(request)))


async def sending_account(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> int:
    """The key's account, for routes that send mail: scope `send` (or `full`)."""
    return (await _granted(request, credentials, "send")).account_id


async def full_caller(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Caller:
    """The key's account, for administering credentials and endpoints: scope `full` even to read."""
    grant = await _granted(request, credentials, "full")
    return Caller(grant.account_id, Actor.api_key(grant.prefix, request_origin(request)))


async def full_account(caller: Caller = Depends(full_caller)) -> int:
    return caller.account_id


async def admin_actor(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Actor:
    """`admin:<key prefix>` for a platform-admin key; 403 for an account API key, 401 for anything else."""
    actor: Actor | None = request.scope.get(_ADMIN)
    if actor is None:
        actor = await _admin(request, credentials)
        request.scope[_ADMIN] = actor
    return actor


async def _admin(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Actor:
    if credentials is None:
        raise Problem(401, "send a platform-admin key as `Authorization: Bearer <key>`", headers=_CHALLENGE)
    core = get_core(request)
    prefix = await core.admin_keys.prefix_for(credentials.credentials)
    if prefix is not None:
        return Actor.admin_key(prefix, request_origin(request))
    if await core.api_keys.grant_for(credentials.credentials) is not None:
        raise Problem(403, "only a platform-admin key may do this (`estafeta admin create-key`)")
    raise Problem(401, "the admin key is unknown or revoked", headers=_CHALLENGE)


KeyCheck = Callable[[Request, HTTPAuthorizationCredentials | None], Awaitable[Any]]
KEY_CHECKS: frozenset[KeyCheck] = frozenset({account_id, caller, sending_account, full_caller, admin_actor})
"""The dependencies that check the API (or admin) key; a route names one of them, maybe through another."""


async def check_key(request: Request, check: KeyCheck) -> None:
    """Run a route's key check from the Authorization header, as FastAPI would run the dependency."""
    await check(request, await _bearer(request))
