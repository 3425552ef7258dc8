"""The one handler that renders errors: ``{"error": {"code", "message", "request_id"}}``.

Every refusal is counted in ``clearance_requests_refused_total{endpoint,status,code}``.
:func:`error_responses` documents the same shape in the OpenAPI schema, with the headers that
come with it (``WWW-Authenticate`` on 401 and 403, ``Retry-After`` on 503), so the schema
states every status a route can answer (checked by ``battery.fuzz``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.middleware import route_template
from core.errors import AuthenticationError, BackendUnavailableError, ClearanceError, PermissionDeniedError
from core.logging import Log

log = Log("clearance.api")
RESOURCE_METADATA_KEY = "clearance.resource_metadata"  # set by api.mcp on requests to /mcp


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. invalid_token, insufficient_scope, not_found")
    message: str
    request_id: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


_TEXT = {"type": "string"}
_ERROR_DOCS: dict[int, dict[str, Any]] = {
    400: {"description": "the request body could not be read (not UTF-8 JSON)"},
    401: {"description": "no bearer token, or one that is not valid (missing_token, invalid_token, ...)",
          "headers": {"WWW-Authenticate": {"description": 'Bearer realm="clearance", with error="invalid_token" '
                                                          "and a fixed error_description when a token was sent",
                                           "required": True, "schema": _TEXT}}},
    403: {"description": "a valid token without the scope this route needs (insufficient_scope), of another "
                         "tenant (wrong_tenant), not a writer of the source (source_forbidden), or a server folder "
                         "outside ingest.allowed_roots (path_not_allowed)",
          "headers": {"WWW-Authenticate": {"description": 'Bearer realm="clearance", error="insufficient_scope"',
                                           "schema": _TEXT}}},
    # Also what the router answers when a path parameter cannot be routed: a source holding "/"
    # (decoded from %2F before routing) or a document id holding a line feed.
    404: {"description": "not found, or not visible to the caller (the two are indistinguishable), "
                         "or a path no route matches"},
    409: {"description": "contradicts the current state: a source that exists (source_exists), a write of the "
                         "wrong source kind (source_kind_mismatch), a sync the mass-delete guard stops "
                         "(mass_delete_refused)"},
    413: {"description": "the body is over api.max_body_bytes (body_too_large) or its JSON nests deeper than "
                         "api.max_json_depth (json_too_deep)"},
    422: {"description": "the request does not fit the schema or is refused as invalid (invalid_request, ...)"},
    431: {"description": "the request headers are over api.max_header_bytes (headers_too_large)"},
    503: {"description": "a backend (index, catalog, the issuer's signing keys) is unavailable: retry later",
          "headers": {"Retry-After": {"description": "seconds", "required": True,
                                      "schema": {"type": "string", "pattern": "^[0-9]+$"}}}},
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses a route can answer (body: :class:`ErrorBody`)."""
    return {status: {"model": ErrorBody, **_ERROR_DOCS[status]} for status in statuses}


def _body(request: Request, code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "request_id": getattr(request.state, "request_id", None)}}


def _refused(request: Request, status: int, code: str) -> None:
    metrics = getattr(getattr(request.app.state, "services", None), "metrics", None)
    if metrics is not None:
        metrics.refused.labels(route_template(request.scope), str(status), code).inc()


def install(app: FastAPI) -> None:
    @app.exception_handler(ClearanceError)
    async def clearance_error(request: Request, exc: ClearanceError) -> JSONResponse:
        headers: dict[str, str] = {}
        if isinstance(exc, AuthenticationError):
            if exc.code == "missing_token":
                headers["WWW-Authenticate"] = 'Bearer realm="clearance"'
            else:
                headers["WWW-Authenticate"] = f'Bearer realm="clearance", error="invalid_token", error_description="{exc.message}"'
        elif isinstance(exc, PermissionDeniedError):
            headers["WWW-Authenticate"] = 'Bearer realm="clearance", error="insufficient_scope"'
        if "WWW-Authenticate" in headers and request.scope.get(RESOURCE_METADATA_KEY):
            # RFC 9728 §5.1, on the MCP endpoint (api.mcp): where to find this resource's metadata.
            headers["WWW-Authenticate"] += f', resource_metadata="{request.scope[RESOURCE_METADATA_KEY]}"'
        elif isinstance(exc, BackendUnavailableError):
            headers["Retry-After"] = str(exc.retry_after_s)
        if exc.status >= 500:
            log.error("request.failed", code=exc.code, endpoint=route_template(request.scope))
        else:
            log.info("request.refused", code=exc.code, status=exc.status, endpoint=route_template(request.scope))
        _refused(request, exc.status, exc.code)
        return JSONResponse(_body(request, exc.code, exc.message), status_code=exc.status, headers=headers)

    @app.exception_handler(OperationalError)
    async def database_down(request: Request, exc: OperationalError) -> JSONResponse:
        # The catalog cannot be reached on a path that does not translate at its boundary
        # (pushes, ingest jobs): the same 503 + Retry-After as everywhere else, not a crash.
        return await clearance_error(request, BackendUnavailableError(
            f"catalog unavailable: {type(exc.orig).__name__}", code="catalog_unavailable"))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        _refused(request, 422, "invalid_request")
        return JSONResponse(_body(request, "invalid_request", f"{where}: {first.get('msg', 'invalid')}"), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, ClearanceError):
            # FastAPI turns any error while it reads the body into a 400; a limit refused from
            # the body stream (``api.limits``) keeps its own status and code.
            return await clearance_error(request, exc.__cause__)
        code = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        _refused(request, exc.status_code, code)
        return JSONResponse(_body(request, code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Runs outside the request-context middleware: the request id is passed explicitly.
        rid = getattr(request.state, "request_id", None)
        log.error("request.crashed", exc=True, endpoint=route_template(request.scope), error=type(exc).__name__,
                  request_id=rid)
        _refused(request, 500, "internal_error")
        return JSONResponse(_body(request, "internal_error", "internal error"), status_code=500,
                            headers={"X-Request-ID": rid} if rid else None)
