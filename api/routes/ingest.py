from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from api.deps import AuthenticatedRoute, IngestCaller, ServicesDep
from api.errors import error_responses
from api.fields import RequestBody
from core.errors import InvalidRequestError
from ingest.sources import FilesystemSource

router = APIRouter(tags=["ingest"], route_class=AuthenticatedRoute)


class IngestJobRequest(RequestBody):
    path: str
    source: str | None = None


@router.post("/v1/ingest/jobs", responses=error_responses(400, 401, 403, 422, 503))
def run_ingest_job(req: IngestJobRequest, caller: IngestCaller, services: ServicesDep) -> dict:
    """Sync a directory on the server's filesystem (how the CLI ingests while the server owns the index)."""
    root = Path(req.path)
    if not root.is_dir():
        raise InvalidRequestError(f"not a directory on the server: {req.path}")
    report = services.ingestor.sync(FilesystemSource(root, req.source))
    return report.as_dict()
