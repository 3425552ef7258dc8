"""FastAPI application factory. Settings are built by the caller and passed in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import console, docs, errors, mcp
from api.middleware import RequestContext
from api.routes import admin, connectors, health, identity, ingest, maintenance, push, scim, search
from app.ops import warn_tenant_mismatch
from app.services import Services, build_services
from core.logging import configure
from core.settings import Settings


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    configure(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        app.state.services = services or build_services(settings)
        app.state.services.catalog.interrupt_orphaned_jobs()  # jobs whose process died (JobState)
        warn_tenant_mismatch(app.state.services)  # logs only: /readyz says degraded with the tenants
        try:
            async with mcp_endpoint.running():  # the MCP transport's task group (api.mcp)
                yield
        finally:
            if owned:
                app.state.services.close()

    # docs_url/redoc_url off: FastAPI's pages load from a CDN; api.docs serves packaged assets.
    app = FastAPI(title="Clearance", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    docs.install(app)
    if services is not None:
        app.state.services = services

    app.add_middleware(RequestContext)  # request id (logs, responses), latency and status metrics
    errors.install(app)
    for r in (health.router, identity.router, search.router, ingest.router, push.router, admin.router,
              maintenance.router, connectors.router):
        app.include_router(r)
    if settings.directory.scim_enabled:  # off: no /scim/v2 route at all (a plain 404, nothing to probe)
        app.include_router(scim.router)
    mcp_endpoint = mcp.install(app, settings)  # /mcp and its RFC 9728 metadata
    console.install(app, settings)  # /console: server-rendered pages over the same services (api.console)
    return app
