"""SCIM 2.0 at ``/scim/v2`` (RFC 7644): Users, Groups, discovery. A thin route over
``app.directory.ScimEndpoint``, which checks the SCIM credential (never an OIDC token), serves
the request and writes the audit; this module only turns HTTP into a ``ScimRequest`` and the
``ScimResponse`` back. Without a configured SCIM credential every path here is a 404."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from api.deps import ServicesDep
from app.directory import scim_request
from core.errors import NotFoundError

PREFIX = "/scim/v2"
router = APIRouter(tags=["scim"])


@router.api_route(PREFIX + "{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def scim(request: Request, path: str, services: ServicesDep) -> Response:
    endpoint = services.scim
    if endpoint is None:
        raise NotFoundError("SCIM is not configured (directory.scim_token_sha256)")
    if path and not path.startswith("/"):
        raise NotFoundError("no such path")  # /scim/v2Users is not /scim/v2/Users
    base = (services.settings.server.public_url or str(request.base_url)).rstrip("/") + PREFIX
    # The credential is checked before the body is read: an unauthenticated caller never makes
    # the server buffer a request body. Only /ServiceProviderConfig is served without one
    # (RFC 7643 §5), and it has no body; the endpoint answers 401 to the rest.
    body = await request.body() if endpoint.authenticated(request.headers.get("authorization")) else b""
    call = scim_request(request.method, base, path, dict(request.query_params), list(request.headers.items()), body)
    rid = str(getattr(request.state, "request_id", ""))
    answer = await run_in_threadpool(endpoint.handle, call, rid)
    content = json.dumps(answer.body).encode() if answer.body is not None else b""
    headers = {k: v for k, v in answer.headers.items() if k.lower() != "www-authenticate"}
    if int(answer.status) == 401:  # RFC 7235: a 401 names its scheme (the SCIM credential, not OIDC)
        headers["WWW-Authenticate"] = 'Bearer realm="clearance-scim"'
    return Response(content=content, status_code=int(answer.status), headers=headers)
