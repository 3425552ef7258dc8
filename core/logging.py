"""Structured JSON logs: ``log.info("search.done", hits=3, took_ms=4.2)``.

Invariants:

- Tokens and raw claims are never passed to a logger; callers log hashed identifiers only
  (``testkit/log_hygiene.py`` scans every record the test suite emits for token-shaped text).
- Every line written while a request is being served carries its ``request_id``: the API sets
  ``request_id_var`` for the duration of the request and the formatter reads it, so loggers of
  any library get it too, not only ``Log``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

# The id of the request being served in this context (None outside requests). Starlette copies
# the context into the worker thread of a sync endpoint, so it holds there as well.
request_id_var: ContextVar[str | None] = ContextVar("clearance_request_id", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid is not None:
            out["request_id"] = rid
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class Log:
    """Keyword-only structured logger."""

    def __init__(self, name: str) -> None:
        self._log = logging.getLogger(name)

    def _emit(self, level: int, event: str, exc: bool = False, **fields: Any) -> None:
        if self._log.isEnabledFor(level):
            self._log.log(level, event, extra={"fields": fields}, exc_info=exc)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, **fields)

    def error(self, event: str, exc: bool = False, **fields: Any) -> None:
        self._emit(logging.ERROR, event, exc=exc, **fields)


class _StderrJson(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``configure`` owns; other handlers on the root logger are left alone."""


def configure(level: str = "INFO") -> None:
    """Idempotent: one JSON handler on stderr, added once; never removes handlers it did not add
    (a test harness or an embedding application may have attached its own)."""
    root = logging.getLogger()
    if not any(isinstance(h, _StderrJson) for h in root.handlers):
        handler = _StderrJson(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level)
