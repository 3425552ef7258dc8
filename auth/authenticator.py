"""Bearer token → ``Entitlements``, plus the scope check per endpoint.

One object per process, built from ``AuthSettings``: in ``dev`` mode the trusted issuer is the
local dev issuer (static key), in ``oidc`` mode every configured issuer with a remote JWKS.
"""

from __future__ import annotations

import json
from pathlib import Path

from auth.dev_issuer import DevIssuer
from auth.keys import RemoteJwks, StaticKeys
from auth.principals import ClaimsResolver
from auth.validator import TokenValidator, TrustedIssuer
from core.errors import AuthenticationError, ConfigError, PermissionDeniedError
from core.settings import AuthSettings
from core.types import Entitlements

SEARCH = "clearance:search"
INGEST = "clearance:ingest"
ADMIN = "clearance:admin"


class Authenticator:
    def __init__(self, validator: TokenValidator, resolver: ClaimsResolver, dev: DevIssuer | None = None) -> None:
        self.validator = validator
        self.resolver = resolver
        self.dev = dev

    def authenticate(self, authorization: str | None) -> Entitlements:
        if not authorization:
            raise AuthenticationError("missing bearer token", code="missing_token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("authorization must be 'Bearer <token>'")
        return self.resolver.resolve(self.validator.validate(token.strip()))

    @staticmethod
    def require(ent: Entitlements, scope: str) -> None:
        """Admin scope implies the others; a role of the same name counts as the scope."""
        granted = ent.scopes | {p.removeprefix("role:") for p in ent.principals if p.startswith("role:")}
        if scope not in granted and ADMIN not in granted:
            raise PermissionDeniedError(f"token lacks the '{scope}' scope")


def build_authenticator(settings: AuthSettings, dev_key_path: Path, group_map_path: Path | None = None) -> Authenticator:
    group_map: dict[str, str] = {}
    if group_map_path is not None:
        group_map = json.loads(group_map_path.read_text("utf-8"))
    resolver = ClaimsResolver(group_map)
    if settings.mode == "dev":
        dev = DevIssuer(settings, dev_key_path)
        trusted = [TrustedIssuer(dev.issuer_settings, StaticKeys(dev.jwks()))]
        return Authenticator(TokenValidator(trusted, max_token_bytes=settings.max_token_bytes), resolver, dev)
    if not settings.issuers:
        raise ConfigError("auth.mode=oidc needs at least one issuer (CLEARANCE_AUTH__ISSUERS)")
    trusted = [
        TrustedIssuer(i, RemoteJwks(i, cooldown_s=settings.jwks_cooldown_s, max_age_s=settings.jwks_max_age_s))
        for i in settings.issuers
    ]
    return Authenticator(TokenValidator(trusted, max_token_bytes=settings.max_token_bytes), resolver)
