"""The FastAPI application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from estafeta import __version__
from estafeta.api import events, messages, problems, smtp_credentials

if TYPE_CHECKING:
    from estafeta.platform import Platform


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(
        title="Estafeta",
        version=__version__,
        description="Send transactional and bulk email; follow every message through its events.",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.platform = platform
    problems.install(app)
    app.include_router(messages.router)
    app.include_router(events.router)
    app.include_router(smtp_credentials.router)

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
