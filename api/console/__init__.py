"""The web console under ``/console``: server-rendered pages (Jinja2, plain forms, packaged CSS,
no script) for the people who run Clearance and the people who search with it.

Invariants:

- The console has no privileged path of its own. Every page acts as the signed-in user, whose
  access token (dev issuer or the configured OIDC issuer) is validated on every request by the
  same ``services.auth.authenticate`` as the API. Chunks are shown only from
  ``services.reads`` (the audited read path: one audit event per search or document view);
  operator pages call ``services.admin`` and ``services.writes`` with the user's entitlements,
  which check ``clearance:admin`` themselves; the console's own admin check only decides what
  to render.
- Every form carries the session's CSRF token; a POST without it (or with another) is a 403
  ``csrf_failed`` before anything runs.
- The session cookie is signed (HMAC-SHA-256, per-deployment key), ``HttpOnly``,
  ``SameSite=Lax``, and ``Secure`` unless the console is served on a loopback address.
"""

from __future__ import annotations

from fastapi import FastAPI

from core.settings import Settings


def install(app: FastAPI, settings: Settings) -> None:
    if not settings.console.enabled:
        return
    from api.console.routes import router

    app.include_router(router)
