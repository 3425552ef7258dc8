"""The error tree of the Clearance client, mapped from the API's stable error codes
(``{"error": {"code", "message", "request_id"}}``). Catch a class for a kind of failure
(``AuthenticationError``: get a new token), or look at ``code`` for the exact reason."""

from __future__ import annotations


class ClearanceError(Exception):
    """Any error answer from the server (or an unreadable one)."""

    def __init__(self, message: str, *, code: str, status: int, request_id: str | None = None) -> None:
        super().__init__(f"[{code}] {message}")
        self.message = message
        self.code = code
        self.status = status
        self.request_id = request_id


class AuthenticationError(ClearanceError):
    """401: no token, or one that is not valid here (expired, wrong audience, unknown issuer)."""


class PermissionDeniedError(ClearanceError):
    """403: a valid token without the scope (``insufficient_scope``), wrong tenant, empty scope."""


class NotFoundError(ClearanceError):
    """404: missing, or not visible to this caller (the server never says which)."""


class InvalidRequestError(ClearanceError):
    """400/422: the request was refused as invalid."""


class InvalidCursorError(InvalidRequestError):
    """422 ``invalid_cursor``: a page cursor of another caller or another query, or tampered with."""


class BackendUnavailableError(ClearanceError):
    """503: a backend is down; ``retry_after_s`` is the server's advice. Raised once the client's
    retries are spent."""

    def __init__(self, message: str, *, code: str, status: int, request_id: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message, code=code, status=status, request_id=request_id)
        self.retry_after_s = retry_after_s


class ServerError(ClearanceError):
    """5xx other than 503 (``internal_error``)."""


_BY_CODE: dict[str, type[ClearanceError]] = {"invalid_cursor": InvalidCursorError}
_BY_STATUS: dict[int, type[ClearanceError]] = {
    400: InvalidRequestError, 401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError,
    422: InvalidRequestError, 503: BackendUnavailableError,
}


def error_for(status: int, body: object, retry_after_s: float | None = None) -> ClearanceError:
    """The exception for an error answer (its JSON body already parsed, or anything else)."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code, message, rid = str(err.get("code") or f"http_{status}"), str(err.get("message") or ""), err.get("request_id")
    else:
        code, message, rid = f"http_{status}", "unexpected answer from the server", None
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerError if status >= 500 else ClearanceError)
    if issubclass(cls, BackendUnavailableError):
        return cls(message, code=code, status=status, request_id=rid, retry_after_s=retry_after_s)
    return cls(message, code=code, status=status, request_id=str(rid) if rid else None)
