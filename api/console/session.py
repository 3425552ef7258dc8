"""The console's session cookie and CSRF tokens.

The cookie holds the signed-in user's access token and the session's CSRF token, as base64url
JSON signed with HMAC-SHA-256 under a per-deployment key kept in the catalog (the first process
stores a random one, like the search cursor key), so every replica accepts it. The token inside
is validated again on every request (``services.auth.authenticate``): the signature only
protects the CSRF token and the sign-in state from being forged. Anonymous visitors get a
session too (CSRF token only), so the sign-in forms are protected like every other form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Response

from app.services import Services

COOKIE = "clearance_console"
KEY_NAME = "console.session_key"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass
class Session:
    csrf: str = field(default_factory=lambda: os.urandom(24).hex())
    token: str | None = None  # the user's access token (validated on every request)
    dev: bool = False  # signed in through the dev issuer
    login: dict[str, str] | None = None  # OIDC sign-in in progress: state, code_verifier, nonce
    exp: int = 0
    dirty: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"csrf": self.csrf, "token": self.token, "dev": self.dev, "login": self.login, "exp": self.exp}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def session_key(services: Services) -> bytes:
    return bytes.fromhex(services.catalog.meta_value(KEY_NAME, os.urandom(32).hex()))


def _key(request: Request) -> bytes:
    state = request.app.state
    key = getattr(state, "console_key", None)
    if key is None:
        key = state.console_key = session_key(request.app.state.services)
    return key  # type: ignore[no-any-return]


def encode(key: bytes, session: Session) -> str:
    body = _b64(json.dumps(session.as_dict(), separators=(",", ":")).encode())
    return f"{body}.{_b64(hmac.new(key, body.encode(), hashlib.sha256).digest())}"


def decode(key: bytes, value: str | None) -> Session | None:
    if not value or value.count(".") != 1:
        return None
    body, sig = value.split(".")
    try:
        if not hmac.compare_digest(_unb64(sig), hmac.new(key, body.encode(), hashlib.sha256).digest()):
            return None
        data = json.loads(_unb64(body))
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
        return None
    if data.get("exp", 0) and data["exp"] < time.time():
        return None
    return Session(csrf=data["csrf"], token=data.get("token"), dev=bool(data.get("dev")), login=data.get("login"),
                   exp=int(data.get("exp") or 0))


def load(request: Request) -> Session:
    """The request's session (a fresh anonymous one, to be set on the response, if none)."""
    existing = getattr(request.state, "console_session", None)
    if isinstance(existing, Session):
        return existing
    session = decode(_key(request), request.cookies.get(COOKIE))
    if session is None:
        session = Session(dirty=True)
    request.state.console_session = session
    return session


def is_loopback(request: Request, public_url: str) -> bool:
    if public_url:
        from urllib.parse import urlsplit

        return (urlsplit(public_url).hostname or "") in LOOPBACK
    return (request.url.hostname or "") in LOOPBACK


def save(request: Request, response: Response, session: Session, *, public_url: str) -> None:
    response.set_cookie(COOKIE, encode(_key(request), session), httponly=True, samesite="lax", path="/console",
                        secure=not is_loopback(request, public_url))


def clear(request: Request, response: Response, *, public_url: str) -> None:
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="lax",
                           secure=not is_loopback(request, public_url))


def csrf_ok(session: Session, sent: object) -> bool:
    return isinstance(sent, str) and bool(sent) and hmac.compare_digest(sent.encode(), session.csrf.encode())
