"""Backups taken by the server, which owns the embedded index while it runs (scope
``clearance:admin``, the deployment's own tenant). `clearance backup` calls this when a server
holds the shard; ``app.maintenance`` says how the copy stays consistent while searches and
writes go on."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.deps import AdminCaller, AuthenticatedRoute, ServicesDep
from api.errors import error_responses
from app.maintenance import backup_named

router = APIRouter(tags=["admin"], prefix="/v1/admin", route_class=AuthenticatedRoute,
                   responses=error_responses(401, 403, 503))


class BackupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # a folder name under storage.backup_dir (never a path); empty: a timestamp
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@router.post("/backups", responses=error_responses(409, 422))
def create_backup(caller: AdminCaller, services: ServicesDep, body: BackupRequest | None = None) -> dict[str, Any]:
    """Back up the embedded store (Edge shard + SQLite catalog) into ``storage.backup_dir``."""
    snap = backup_named(services, body.name if body else None)
    return {"path": str(snap.path.resolve()), "manifest": {k: v for k, v in snap.manifest.items() if k != "files"}}
