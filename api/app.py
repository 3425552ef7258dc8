"""FastAPI application factory. Settings are built by the caller and passed in."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from api import errors, mcp
from api.middleware import RequestContext
from api.routes import admin, health, identity, ingest, push, search
from app.services import Services, build_services
from core.logging import configure
from core.settings import Settings


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    configure(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        app.state.services = services or build_services(settings)
        try:
            async with mcp_endpoint.running():  # the MCP transport's task group (api.mcp)
                yield
        finally:
            if owned:
                app.state.services.close()

    app = FastAPI(title="Clearance", version="0.1.0", lifespan=lifespan)
    if services is not None:
        app.state.services = services

    app.add_middleware(RequestContext)  # request id (logs, responses), latency and status metrics
    errors.install(app)
    for r in (health.router, identity.router, search.router, ingest.router, push.router, admin.router):
        app.include_router(r)
    mcp_endpoint = mcp.install(app, settings)  # /mcp and its RFC 9728 metadata
    return app
