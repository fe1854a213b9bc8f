"""`/metrics`: Prometheus exposition for operators, on the API or on a listener of its own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, FastAPI, Response

from estafeta.api.deps import platform
from estafeta.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from estafeta.platform import Platform

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(plat: Platform = Depends(platform)) -> Response:
    return Response(await plat.metrics.render(plat.db), media_type=CONTENT_TYPE)


def metrics_app(plat: Platform) -> FastAPI:
    """The app of the separate metrics listener (`settings.metrics.port`)."""
    app = FastAPI(title="Estafeta metrics", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.platform = plat
    app.include_router(router)
    return app
