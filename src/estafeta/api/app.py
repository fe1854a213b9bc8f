"""The FastAPI application."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from estafeta import __version__
from estafeta.api import (
    abuse,
    audit,
    bounces,
    campaigns,
    dkim_keys,
    dmarc,
    domains,
    events,
    keys,
    lint,
    lists,
    messages,
    pages,
    problems,
    reputation,
    smtp_credentials,
    streams,
    suppressions,
)
from estafeta.api import metrics as metrics_api
from estafeta.api import stats as stats_api
from estafeta.api import tracking as tracking_api
from estafeta.api import usage as usage_api
from estafeta.api import webhooks as webhooks_api
from estafeta.api.body_limit import BodyLimit
from estafeta.web import app as dashboard

if TYPE_CHECKING:
    from estafeta.core import Core


def _document(app: FastAPI) -> None:
    """Add to the OpenAPI document the schemas that routes name but FastAPI does not collect: the problem
    body, and the message bodies that `/v1/messages` reads itself."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            components = build().setdefault("components", {}).setdefault("schemas", {})
            components["Problem"] = problems.PROBLEM_SCHEMA
            components.update(messages.body_schemas())
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(core: Core) -> FastAPI:
    app = FastAPI(
        title="Estafeta",
        version=__version__,
        description="Send transactional and bulk email; follow every message through its events.",
        docs_url="/docs",
        openapi_url="/openapi.json",
        responses=problems.responses(*problems.COMMON_STATUSES),
    )
    app.state.core = core
    problems.install(app)
    app.add_middleware(BodyLimit, limit=core.settings.api.max_request_bytes)
    app.include_router(messages.router)
    app.include_router(events.router)
    app.include_router(smtp_credentials.router)
    app.include_router(keys.router)
    app.include_router(suppressions.router)
    app.include_router(suppressions.admin_router)
    app.include_router(bounces.router)
    app.include_router(webhooks_api.router)
    app.include_router(stats_api.router)
    app.include_router(tracking_api.router)
    app.include_router(tracking_api.public_router)
    app.include_router(lists.router)
    app.include_router(campaigns.router)
    app.include_router(streams.router)
    app.include_router(lint.router)
    app.include_router(pages.router)
    app.include_router(reputation.router)
    app.include_router(reputation.admin_router)
    app.include_router(abuse.router)
    app.include_router(audit.router)
    app.include_router(dmarc.router)
    app.include_router(dkim_keys.router)
    app.include_router(domains.router)
    app.include_router(usage_api.router)
    _document(app)
    dashboard.install(app)
    if core.settings.metrics.enabled and core.settings.metrics.port is None:
        app.include_router(metrics_api.router)

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        """`ok` while the process serves; it names the service and its version, so that a load balancer or
        `estafeta doctor` can tell Estafeta from another program on the port."""
        return {"status": "ok", "service": "estafeta", "version": __version__}

    return app
