"""The error tree. Each class carries a stable code and an HTTP status; ``api`` maps them to
responses in one handler and the CLI to one-line messages. Domain code never raises HTTP errors.
"""

from __future__ import annotations


class ClearanceError(Exception):
    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class AuthenticationError(ClearanceError):
    """The token is missing, malformed, forged, expired or from an unknown issuer."""

    code = "invalid_token"
    status = 401


class PermissionDeniedError(ClearanceError):
    """A valid token without the scope the endpoint needs."""

    code = "insufficient_scope"
    status = 403


class NotFoundError(ClearanceError):
    """Missing, or not visible to the caller: the two are indistinguishable on purpose."""

    code = "not_found"
    status = 404


class InvalidRequestError(ClearanceError):
    code = "invalid_request"
    status = 422


class ConflictError(ClearanceError):
    """The request contradicts the current state: a source that already exists, a sync that
    would delete more than the mass-delete guard allows."""

    code = "conflict"
    status = 409


class EmptyScopeError(ClearanceError):
    """A scope with no principals must never reach the index."""

    code = "empty_scope"
    status = 403


class RequestTooLargeError(ClearanceError):
    """A request over an HTTP limit (``api.max_body_bytes``, ``api.max_json_depth``): refused as
    it streams in, before it is read in full. Codes: ``body_too_large``, ``json_too_deep``."""

    code = "body_too_large"
    status = 413


class HeadersTooLargeError(RequestTooLargeError):
    """Request headers over ``api.max_header_bytes`` (RFC 6585: 431)."""

    code = "headers_too_large"
    status = 431


class BackendUnavailableError(ClearanceError):
    code = "backend_unavailable"
    status = 503

    def __init__(self, message: str, *, retry_after_s: int = 5, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class IngestError(ClearanceError):
    """A per-document failure: recorded against the document, the job goes on."""

    code = "ingest_failed"
    status = 422


class ConfigError(ClearanceError):
    code = "config_invalid"
    status = 500
