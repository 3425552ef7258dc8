"""Per-request context as plain ASGI middleware: the request id (a valid ``X-Request-ID`` from
the client, else a fresh one) in ``request.state``, in ``core.logging.request_id_var`` for
every log line of the request, and on the response; latency and status per route template in
the metrics; one ``http.request`` log line per request (method, route template, status, time;
never headers or query strings, where credentials could travel). Inside it, the request limits
of ``api.limits`` (header and body size, JSON depth) apply to every route."""

from __future__ import annotations

import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.limits import RequestLimits
from core.logging import Log, request_id_var

log = Log("clearance.http")

QUIET = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes: logged at debug only


def route_template(scope: Scope) -> str:
    """The matched route's path template; ``unmatched`` otherwise (raw paths would let any
    client mint new label values)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            rid = value.decode("latin-1")
            if 0 < len(rid) <= 64 and rid.isprintable():
                return rid
    return None


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        # Limits inside the context: a refusal carries the request id and is logged and counted.
        self.app = RequestLimits(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _client_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id_var.set(rid)
        status = 500  # what an exception escaping this middleware becomes
        t0 = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - t0
            endpoint, method = route_template(scope), str(scope.get("method", ""))
            metrics = _metrics(scope)
            if metrics is not None:
                metrics.request_seconds.labels(endpoint, method).observe(seconds)
                metrics.requests.labels(endpoint, method, str(status)).inc()
            emit = log.debug if endpoint in QUIET else log.info
            emit("http.request", method=method, endpoint=endpoint, status=status, took_ms=round(seconds * 1000, 3))
            request_id_var.reset(token)


def _metrics(scope: Scope) -> Any:
    app = scope.get("app")
    services = getattr(getattr(app, "state", None), "services", None)
    return getattr(services, "metrics", None)
