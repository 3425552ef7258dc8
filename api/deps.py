"""``Annotated`` dependency aliases for route handlers, and the route class that authenticates
before anything else.

Every route that depends on :func:`current_caller` (directly or through a scope check) is
declared in the OpenAPI schema with the ``bearerAuth`` security scheme, and, when its router
uses :class:`AuthenticatedRoute`, authenticates the bearer token *before* FastAPI reads and
parses the request body: a request without a valid token is a 401 with ``WWW-Authenticate``
whatever its body, never a 400/422 about a body nobody was entitled to send.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.services import Services
from auth.authenticator import ADMIN, INGEST, SEARCH, Authenticator
from core.errors import InvalidRequestError, PermissionDeniedError
from core.types import Entitlements

# Documents the scheme in the OpenAPI schema only: the header is parsed and validated by
# ``Authenticator`` (auto_error=False: this object never answers a request by itself).
BEARER = HTTPBearer(scheme_name="bearerAuth", bearerFormat="JWT", auto_error=False,
                    description="OIDC access token (JWT) from a configured issuer, or from the dev issuer in dev mode")


# Dependencies are ``async def`` where they never block: a sync dependency costs a thread-pool
# round trip per request (measured: five hops per search before, two now; BENCHMARKS.md).
async def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


async def current_caller(request: Request, services: ServicesDep,
                         _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None) -> Entitlements:
    caller = getattr(request.state, "caller", None)
    if isinstance(caller, Entitlements):  # authenticated by AuthenticatedRoute before the body was read
        return caller
    # A JWKS refresh does blocking I/O: off the loop.
    return await run_in_threadpool(services.auth.authenticate, request.headers.get("authorization"))


Caller = Annotated[Entitlements, Depends(current_caller)]


async def searcher(caller: Caller) -> Entitlements:
    Authenticator.require(caller, SEARCH)
    return caller


def _own_tenant(caller: Entitlements, services: Services) -> None:
    """Writes and admin reads act on the deployment's tenant (``ingest.tenant``): a caller of
    another tenant, even with the scope, must not push into it or read its audit trail."""
    if caller.tenant != services.settings.ingest.tenant:
        raise PermissionDeniedError("this deployment writes and administers another tenant's documents",
                                    code="wrong_tenant")


async def ingester(caller: Caller, services: ServicesDep) -> Entitlements:
    Authenticator.require(caller, INGEST)
    _own_tenant(caller, services)
    return caller


async def administrator(caller: Caller, services: ServicesDep) -> Entitlements:
    Authenticator.require(caller, ADMIN)
    _own_tenant(caller, services)
    return caller


def writer(action: str) -> Callable[..., Coroutine[Any, Any, Entitlements]]:
    """Dependency of a write route: the scope and tenant checks of ``WriteService`` (audited
    refusals) run before the body is parsed, so a caller who may not write gets its 403 whatever
    it sends. The service checks again, with the source, when it writes."""
    async def check(request: Request, caller: Caller, services: ServicesDep) -> Entitlements:
        source = str(request.path_params.get("source", ""))
        doc_id = request.path_params.get("doc_id")
        await run_in_threadpool(services.writes.require_scope, caller, action, source, doc_id)
        return caller

    return check


def source_administrator(action: str) -> Callable[..., Coroutine[Any, Any, Entitlements]]:
    """Dependency of a source-changing admin route (audited refusal, before the body is parsed)."""
    async def check(request: Request, caller: Caller, services: ServicesDep) -> Entitlements:
        source = str(request.path_params.get("source", ""))
        await run_in_threadpool(services.sources.require_admin, caller, action, source)
        return caller

    return check


SearchCaller = Annotated[Entitlements, Depends(searcher)]
IngestCaller = Annotated[Entitlements, Depends(ingester)]
AdminCaller = Annotated[Entitlements, Depends(administrator)]


def _needs_caller(dependant: Any) -> bool:
    return any(d.call is current_caller or _needs_caller(d) for d in dependant.dependencies)


def _query_names(dependant: Any) -> set[str]:
    names = {str(getattr(p, "alias", None) or p.name) for p in dependant.query_params}
    for d in dependant.dependencies:
        names |= _query_names(d)
    return names


def refuse_unknown_query(request: Request, allowed: set[str]) -> None:
    """A query parameter the route does not declare is a 422 naming it (``?limt=5`` is refused,
    not silently ignored), like an unknown field in a body (``api.fields.RequestBody``)."""
    unknown = sorted(set(request.query_params.keys()) - allowed)
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise InvalidRequestError(f"query.{unknown[0]}: unknown query parameter (this route takes: {expected})")


class AuthenticatedRoute(APIRoute):
    """Authenticates first on routes that need a caller (see the module docstring), then refuses
    unknown query parameters; other routes only get the query check. Refusals raised here go
    through the app's error handlers as usual."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        allowed = _query_names(self.dependant)
        if not _needs_caller(self.dependant):
            async def strict_query(request: Request) -> Response:
                refuse_unknown_query(request, allowed)
                return await handler(request)

            return strict_query

        async def authenticate_first(request: Request) -> Response:
            services: Services = request.app.state.services
            # Sync like the dependency it replaces (a JWKS refresh does blocking I/O): off the loop.
            request.state.caller = await run_in_threadpool(services.auth.authenticate,
                                                           request.headers.get("authorization"))
            refuse_unknown_query(request, allowed)
            return await handler(request)

        return authenticate_first
