"""Authentication errors whose text is safe to put in a ``WWW-Authenticate`` header.

Invariant: the message of every ``AuthenticationError`` raised by ``auth`` is a fixed phrase
from this package, passed through ``_SAFE``; it never echoes token content (a kid, an issuer,
a claim), so it cannot break out of the quoted ``error_description`` nor leak token material.
"""

from __future__ import annotations

import re

from core.errors import AuthenticationError

_UNSAFE = re.compile(r"[^A-Za-z0-9 .,:;()/_-]")


def token_error(message: str, *, code: str = "invalid_token") -> AuthenticationError:
    """A 401 with a header-safe message (quotes, backslashes, control characters removed)."""
    return AuthenticationError(_UNSAFE.sub("", message)[:160] or "invalid token", code=code)
