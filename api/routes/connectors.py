"""Connector sources over the API (scope ``clearance:admin``): run a sync now, a source's connector
status (streams, failures, missed runs, unmapped identities), and every connector source with the
installed connectors. Creating one is ``POST /v1/admin/sources`` with ``kind: connector``.

A sync requested here runs in the request, through the same engine and lock as the scheduler's
(``app.connectors``; 409 ``sync_running`` while another process runs that stream); the request is
a write event of the admin, the run's own changes are the ``connector:<source>`` actor's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends

from api.deps import AdminCaller, AuthenticatedRoute, ServicesDep, source_administrator
from api.errors import error_responses
from app.connectors import ConnectorSync
from app.services import Services
from core.errors import BackendUnavailableError
from core.types import Entitlements

router = APIRouter(tags=["admin"], prefix="/v1/admin", route_class=AuthenticatedRoute,
                   responses=error_responses(401, 403, 503))


def _engine(services: Services) -> ConnectorSync:
    if services.connectors is None:  # pragma: no cover - build_services always makes one
        raise BackendUnavailableError("the connector engine is not running in this process", code="connectors_off")
    return services.connectors


@router.post("/sources/{source}/sync", responses=error_responses(404, 409, 422))
def sync_source(source: str, caller: Annotated[Entitlements, Depends(source_administrator("connector_sync"))],
                services: ServicesDep, stream: Literal["content", "permissions"] = "content") -> dict[str, Any]:
    """Run a content (default) or permission sync of a connector source now; answers its report."""
    engine = _engine(services)
    engine.config(source)  # 404 / 422 before anything is recorded
    services.sources.event(caller, "connector_sync", "requested", source=source, detail={"stream": stream})
    return engine.run(source, stream).as_dict()


@router.get("/sources/{source}/connector", responses=error_responses(404, 422))
def connector_status(source: str, caller: AdminCaller, services: ServicesDep) -> dict[str, Any]:
    """The connector of a source: config (secrets masked), streams and unmapped identities."""
    return _engine(services).status(source)


@router.get("/connectors")
def list_connectors(caller: AdminCaller, services: ServicesDep) -> dict[str, Any]:
    """Installed connectors, every connector source's status, and their health (as in /readyz)."""
    from importlib.metadata import entry_points

    from app.scheduler import connector_health
    from ingest.connectors.contract import ENTRY_POINT_GROUP

    engine = _engine(services)
    installed = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} | set(engine.factories))
    return {"installed": installed, "sources": [engine.status(r.name) for r in engine.store.sources()],
            "health": connector_health(engine.store, services.settings.scheduler.failing_after)}
