"""Liveness, readiness (``app.ops`` defines what each means) and the Prometheus exposition.

None of them needs a token: probes and scrapers carry none, and the answers hold no document
content, user or query; only source names, counts and check results. Expose them on an
internal network.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from api.deps import ServicesDep
from api.errors import error_responses
from app.ops import RETRY_AFTER_S, readiness
from core.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


NOT_READY: dict[int | str, dict[str, Any]] = {503: {"description": "not ready: the same body, with the failing checks",
                   "headers": error_responses(503)[503]["headers"]}}


@router.get("/readyz", responses=NOT_READY)
def readyz(services: ServicesDep) -> JSONResponse:
    ready, body = readiness(services)
    if ready:
        return JSONResponse(body)
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


@router.get("/metrics", include_in_schema=False)
def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE)
