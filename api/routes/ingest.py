from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import Field

from api.deps import AuthenticatedRoute, ServicesDep, writer
from api.errors import error_responses
from api.fields import RequestBody
from core.types import Entitlements

router = APIRouter(tags=["ingest"], route_class=AuthenticatedRoute)


class IngestJobRequest(RequestBody):
    path: str = Field(description="absolute folder on the server, under ingest.allowed_roots")
    source: str | None = Field(default=None, description="a registered filesystem source (default: the folder name)")
    allow_deletes: bool = Field(default=False, description="let the sync delete more than ingest.max_delete_fraction "
                                                           "of the source's documents, or all of them")


@router.post("/v1/ingest/jobs", responses=error_responses(400, 401, 403, 404, 409, 422, 503))
def run_ingest_job(req: IngestJobRequest, caller: Annotated[Entitlements, Depends(writer("sync"))], services: ServicesDep) -> dict:
    """Sync a directory on the server's filesystem into a filesystem source the caller may write
    (how the CLI ingests while the server owns the index)."""
    return services.writes.sync_folder(caller, req.path, req.source, allow_deletes=req.allow_deletes).as_dict()
