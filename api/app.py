"""FastAPI application factory. Settings are built by the caller and passed in."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request, Response

from api import errors
from api.routes import health, identity, ingest, push, search
from api.services import Services, build_services
from core.logging import configure
from core.settings import Settings


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    configure(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        app.state.services = services or build_services(settings)
        try:
            yield
        finally:
            if owned:
                app.state.services.close()

    app = FastAPI(title="Clearance", version="0.1.0", lifespan=lifespan)
    if services is not None:
        app.state.services = services

    @app.middleware("http")
    async def request_id(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        rid = request.headers.get("x-request-id", "")
        request.state.request_id = rid if 0 < len(rid) <= 64 and rid.isprintable() else uuid.uuid4().hex
        response = await call_next(request)
        response.headers["X-Request-ID"] = request.state.request_id
        return response

    errors.install(app)
    for r in (health.router, identity.router, search.router, ingest.router, push.router):
        app.include_router(r)
    return app
