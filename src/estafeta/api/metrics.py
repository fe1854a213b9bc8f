"""`/metrics`: Prometheus exposition for operators, on the API or on a listener of its own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, FastAPI, Response

from estafeta.api.deps import get_core
from estafeta.api.route import ApiRoute
from estafeta.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from estafeta.core import Core

router = APIRouter(route_class=ApiRoute, tags=["operations"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(core: Core = Depends(get_core)) -> Response:
    return Response(await core.metrics_text(), media_type=CONTENT_TYPE)


def metrics_app(core: Core) -> FastAPI:
    """The app of the separate metrics listener (`settings.metrics.port`)."""
    app = FastAPI(title="Estafeta metrics", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.core = core
    app.include_router(router)
    return app
