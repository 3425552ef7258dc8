from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import IngestCaller, ServicesDep
from core.errors import InvalidRequestError
from ingest.sources import FilesystemSource

router = APIRouter(tags=["ingest"])


class IngestJobRequest(BaseModel):
    path: str
    source: str | None = None


@router.post("/v1/ingest/jobs")
def run_ingest_job(req: IngestJobRequest, caller: IngestCaller, services: ServicesDep) -> dict:
    """Sync a directory on the server's filesystem (how the CLI ingests while the server owns the index)."""
    root = Path(req.path)
    if not root.is_dir():
        raise InvalidRequestError(f"not a directory on the server: {req.path}")
    report = services.ingestor.sync(FilesystemSource(root, req.source))
    return report.as_dict()
