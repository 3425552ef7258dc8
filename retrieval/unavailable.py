"""The index boundary: an engine failure becomes ``BackendUnavailableError`` (503 with
Retry-After), so a broken or closed index is a clean refusal and never a partial or
unfiltered answer. Input validation (``ValueError``) is raised before the engine is called and
is not translated."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from core.errors import BackendUnavailableError, ClearanceError
from core.logging import Log

log = Log("clearance.index")


@contextmanager
def engine_call(backend: str, operation: str) -> Iterator[None]:
    try:
        yield
    except ClearanceError:
        raise
    except Exception as exc:
        # The detail stays in the server log; clients get a stable code and no internals.
        log.error("index.unavailable", backend=backend, operation=operation, error=type(exc).__name__,
                  detail=str(exc)[:200])
        raise BackendUnavailableError("the search index is unavailable") from exc
