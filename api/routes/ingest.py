from __future__ import annotations

from fastapi import APIRouter

from api.deps import AuthenticatedRoute, IngestCaller, ServicesDep
from api.errors import error_responses
from api.fields import RequestBody

router = APIRouter(tags=["ingest"], route_class=AuthenticatedRoute)


class IngestJobRequest(RequestBody):
    path: str
    source: str | None = None


@router.post("/v1/ingest/jobs", responses=error_responses(400, 401, 403, 422, 503))
def run_ingest_job(req: IngestJobRequest, caller: IngestCaller, services: ServicesDep) -> dict:
    """Sync a directory on the server's filesystem (how the CLI ingests while the server owns the index)."""
    return services.writes.sync_folder(caller, req.path, req.source).as_dict()
