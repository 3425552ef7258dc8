"""Sign-in to the console with the OIDC authorization code flow and PKCE (S256), with authlib's
client. The console is a client of the configured issuer (``console.client_id``); the access
token it gets back is what every console page then presents to ``services.auth.authenticate``,
exactly like an API caller's bearer token, so the console trusts nothing the API would not.

``state`` (login CSRF), the PKCE ``code_verifier`` and a ``nonce`` live in the signed session
cookie between the redirect and the callback; the callback refuses a missing or different state.
"""

from __future__ import annotations

import hmac
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client

from core.errors import AuthenticationError, BackendUnavailableError, ConfigError
from core.settings import Settings

_DISCOVERY: dict[str, dict[str, Any]] = {}


def issuer_of(settings: Settings) -> str:
    if settings.console.issuer:
        return settings.console.issuer
    if not settings.auth.issuers:
        raise ConfigError("console sign-in needs console.issuer or an entry in auth.issuers")
    return settings.auth.issuers[0].issuer


async def discover(issuer: str) -> dict[str, Any]:
    if issuer in _DISCOVERY:
        return _DISCOVERY[issuer]
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.get(url)
            resp.raise_for_status()
            meta = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise BackendUnavailableError(f"the identity provider's discovery failed: {type(exc).__name__}",
                                      code="idp_unavailable") from None
    if not isinstance(meta, dict) or meta.get("issuer") != issuer:
        raise AuthenticationError("the identity provider's discovery names another issuer", code="idp_mismatch")
    _DISCOVERY[issuer] = meta
    return meta


def _client(settings: Settings, redirect_uri: str) -> AsyncOAuth2Client:
    c = settings.console
    secret = c.client_secret.get_secret_value() if c.client_secret is not None else None
    return AsyncOAuth2Client(client_id=c.client_id, client_secret=secret, scope=" ".join(c.scopes),
                             redirect_uri=redirect_uri, code_challenge_method="S256",
                             token_endpoint_auth_method="client_secret_post" if secret else "none", timeout=10)


async def start(settings: Settings, redirect_uri: str) -> tuple[str, dict[str, str]]:
    """The IdP's authorization URL, and what the callback needs (kept in the session)."""
    meta = await discover(issuer_of(settings))
    verifier, nonce = generate_token(64), generate_token(24)
    extra = {"resource": settings.console.resource} if settings.console.resource else {}
    async with _client(settings, redirect_uri) as client:
        url, state = client.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier,
                                                     nonce=nonce, **extra)
    return url, {"state": state, "verifier": verifier, "nonce": nonce, "redirect_uri": redirect_uri}


async def finish(settings: Settings, login: dict[str, str] | None, code: str | None, state: str | None) -> str:
    """Exchanges the code (with the PKCE verifier) for tokens; returns the access token."""
    if not login or not state or not code or not hmac.compare_digest(state.encode(), login["state"].encode()):
        raise AuthenticationError("the sign-in response does not match a sign-in this browser started",
                                  code="invalid_state")
    meta = await discover(issuer_of(settings))
    extra = {"resource": settings.console.resource} if settings.console.resource else {}
    try:
        async with _client(settings, login["redirect_uri"]) as client:
            token = await client.fetch_token(meta["token_endpoint"], grant_type="authorization_code", code=code,
                                             code_verifier=login["verifier"], **extra)
    except Exception as exc:  # authlib raises OAuthError subclasses and httpx errors alike
        raise AuthenticationError(f"the identity provider refused the sign-in ({type(exc).__name__})",
                                  code="signin_failed") from None
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise AuthenticationError("the identity provider returned no access token", code="signin_failed")
    return access
