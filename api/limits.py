"""HTTP request limits on every route (``api.*`` settings), as plain ASGI.

Invariants:
- headers over ``api.max_header_bytes`` (names and values together) are refused at once: 431
  ``headers_too_large``;
- a body is checked as it streams in, when the route reads it (so a protected route still
  authenticates first: a request without a valid token stays a 401 whatever it sends): a declared
  ``Content-Length`` over ``api.max_body_bytes`` is refused before a byte of the body is read, and
  a body without one the moment its running total passes the limit: 413 ``body_too_large``.
  At most the limit plus one received chunk is ever held;
- a JSON body (or one without a content type) nested deeper than ``api.max_json_depth`` is
  refused as it streams in: 413 ``json_too_deep``. The scan visits only quotes, backslashes
  and brackets, so a long base64 string costs one regular-expression pass.
Errors raised from the body stream reach ``api.errors``, which renders the project's error shape.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import HeadersTooLargeError, RequestTooLargeError
from core.settings import ApiSettings, IngestSettings, body_limit_for


class JsonDepth:
    """Bracket nesting of a JSON text fed in pieces, without parsing it."""

    _TOKENS = re.compile(rb'["\\\[\]{}]')

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.depth = 0
        self._in_string = False
        self._escaped_first = False  # a backslash ended the previous piece: skip this one's first byte

    def feed(self, data: bytes) -> None:
        skip_until = 1 if self._escaped_first else 0
        self._escaped_first = False
        for m in self._TOKENS.finditer(data, skip_until):
            i = m.start()
            if i < skip_until:
                continue  # the character after a backslash inside a string
            c = data[i]
            if self._in_string:
                if c == 0x5C:  # backslash
                    skip_until = i + 2
                    self._escaped_first = i + 1 >= len(data)
                elif c == 0x22:
                    self._in_string = False
            elif c == 0x22:
                self._in_string = True
            elif c in (0x5B, 0x7B):
                self.depth += 1
                if self.depth > self.limit:
                    raise RequestTooLargeError(f"JSON nested deeper than {self.limit} levels", code="json_too_deep")
            elif c in (0x5D, 0x7D):
                self.depth -= 1


def _settings(scope: Scope) -> ApiSettings:
    services = getattr(getattr(scope.get("app"), "state", None), "services", None)
    api = getattr(getattr(services, "settings", None), "api", None)
    if isinstance(api, ApiSettings) and api.max_body_bytes is not None:
        return api
    return ApiSettings(max_body_bytes=body_limit_for(IngestSettings().max_file_bytes))


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


class RequestLimits:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = _settings(scope)
        header_bytes = sum(len(k) + len(v) for k, v in scope.get("headers", ()))
        if header_bytes > api.max_header_bytes:
            await _refuse(scope, send, HeadersTooLargeError(
                f"request headers of {header_bytes} bytes exceed {api.max_header_bytes}"))
            return
        await self.app(scope, _limited_body(scope, receive, api), send)


def _limited_body(scope: Scope, receive: Receive, api: ApiSettings) -> Receive:
    limit = int(api.max_body_bytes or 0)
    ctype = (_header(scope, b"content-type") or b"").lower()
    depth = JsonDepth(api.max_json_depth) if not ctype or b"json" in ctype else None
    seen = 0
    first = True

    async def receive_limited() -> Message:
        nonlocal seen, first
        if first:
            first = False
            declared = _header(scope, b"content-length")
            if declared is not None and declared.strip().isdigit() and int(declared) > limit:
                raise RequestTooLargeError(f"request body of {int(declared)} bytes exceeds {limit}")
        message = await receive()
        if message["type"] == "http.request":
            body = message.get("body", b"")
            seen += len(body)
            if seen > limit:
                raise RequestTooLargeError(f"request body exceeds {limit} bytes")
            if depth is not None and body:
                depth.feed(body)
        return message

    return receive_limited


async def _refuse(scope: Scope, send: Send, exc: RequestTooLargeError) -> None:
    """Answer before routing (no exception handler runs out here): the same shape and counter."""
    rid = scope.get("state", {}).get("request_id")
    body = json.dumps({"error": {"code": exc.code, "message": exc.message, "request_id": rid}}).encode()
    metrics: Any = getattr(getattr(getattr(scope.get("app"), "state", None), "services", None), "metrics", None)
    if metrics is not None:
        metrics.refused.labels("unmatched", str(exc.status), exc.code).inc()
    await send({"type": "http.response.start", "status": exc.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
