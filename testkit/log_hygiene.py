"""Token-shaped text in logs: the detector, and a handler that scans every record.

``tests/conftest.py`` attaches a ``LeakScanner`` to the root logger for the whole session and
fails the run at the end if any record held a JWT or a long high-entropy base64url run;
``tests/unit/test_log_hygiene.py`` does the same for one run of the API at DEBUG level.

What counts as token-shaped:

- a JWS/JWT: ``eyJ…`` header, dot, payload, dot;
- a run of 40 or more base64url (or standard base64) characters holding upper case, lower
  case and digits, and not pure hex: signatures, key material, opaque tokens. Hex digests
  (content hashes, audit hashes, request ids) and snake_case identifiers do not qualify.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass

from core.logging import JsonFormatter

JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.")
LONG_RUN = re.compile(r"[A-Za-z0-9_\-+/]{40,}")
_HEX = re.compile(r"[0-9a-fA-F]+")


def _token_like(run: str) -> bool:
    if _HEX.fullmatch(run):
        return False
    if "/" in run and run.count("/") > len(run) // 20:  # a path, not base64 (1 in 64 chars is '/')
        return False
    if run.count("_") + run.count("-") > max(2, len(run) // 10):  # identifiers, not random text
        return False
    return any(c.isupper() for c in run) and any(c.islower() for c in run) and any(c.isdigit() for c in run)


def find_secrets(text: str) -> list[str]:
    """Token-shaped substrings of ``text`` (empty when clean)."""
    found = [m.group(0) for m in JWT.finditer(text)]
    found += [m.group(0) for m in LONG_RUN.finditer(text) if _token_like(m.group(0))]
    return found


def redact(secret: str) -> str:
    return f"{secret[:6]}…({len(secret)} chars)"


@dataclass(frozen=True)
class Leak:
    test: str
    logger: str
    event: str
    secrets: tuple[str, ...]

    def describe(self) -> str:
        """Where the leak happened, with the token-shaped text itself redacted."""
        event = self.event
        for secret in self.secrets:
            event = event.replace(secret, redact(secret))
        shown = ", ".join(redact(s) for s in self.secrets)
        return f"{self.test or '<outside a test>'}: logger {self.logger!r} event {event[:120]!r}: {shown}"


class LeakScanner(logging.Handler):
    """Formats every record as production would (JSON, with fields and tracebacks) and keeps
    only the records that hold token-shaped text, so memory stays small over a whole run."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(JsonFormatter())
        self.leaks: list[Leak] = []
        self.scanned = 0
        self.lines: list[str] | None = None  # set to a list to keep every line (one test's worth)
        self._lock_ = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a record that cannot be formatted cannot leak through this format
            return
        secrets = find_secrets(line)
        with self._lock_:
            self.scanned += 1
            if self.lines is not None:
                self.lines.append(line)
            if secrets:
                test = os.environ.get("PYTEST_CURRENT_TEST", "")
                self.leaks.append(Leak(test, record.name, record.getMessage(), tuple(secrets)))
