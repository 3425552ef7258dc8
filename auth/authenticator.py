"""Bearer token → ``Entitlements``, plus the scope check per endpoint.

One object per process, built from ``AuthSettings``: in ``dev`` mode the trusted issuer is the
local dev issuer (static key), in ``oidc`` mode every configured issuer with a remote JWKS.

Invariants: ``authenticate`` returns entitlements or raises ``AuthenticationError`` (401) or
``BackendUnavailableError`` (503, no usable issuer keys); an unexpected exception inside auth
becomes a 401 (fail closed), logged by type only. Tokens and claims are never logged.
Endpoint scopes: ``clearance:search``, ``clearance:ingest``, ``clearance:admin`` (implies the
other two); a role of the same name counts as the scope (app roles in client-credentials
tokens from Entra ID arrive as ``roles``).
"""

from __future__ import annotations

from pathlib import Path

from auth.dev_issuer import DevIssuer
from auth.errors import token_error
from auth.group_map import GroupMap
from auth.keys import RemoteJwks, StaticKeys
from auth.principals import ClaimsResolver, GroupDirectory
from auth.validator import TokenValidator, TrustedIssuer
from core.errors import ClearanceError, ConfigError, PermissionDeniedError
from core.logging import Log
from core.settings import AuthSettings
from core.types import Entitlements

SEARCH = "clearance:search"
INGEST = "clearance:ingest"
ADMIN = "clearance:admin"

log = Log("clearance.auth")


class Authenticator:
    def __init__(self, validator: TokenValidator, resolver: ClaimsResolver, dev: DevIssuer | None = None) -> None:
        self.validator = validator
        self.resolver = resolver
        self.dev = dev

    def authenticate(self, authorization: str | None) -> Entitlements:
        if not authorization:
            raise token_error("missing bearer token", code="missing_token")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
            raise token_error("authorization must be: Bearer token")
        try:
            return self.resolver.resolve(self.validator.validate(token))
        except ClearanceError:
            raise
        except Exception as exc:  # fail closed: a bug in auth must never let a request through
            log.error("auth.unexpected", error=type(exc).__name__)
            raise token_error("token could not be validated") from None

    @staticmethod
    def require(ent: Entitlements, scope: str) -> None:
        """Admin scope implies the others; a role of the same name counts as the scope."""
        granted = ent.scopes | {p.removeprefix("role:") for p in ent.principals if p.startswith("role:")}
        if scope not in granted and ADMIN not in granted:
            raise PermissionDeniedError(f"token lacks the '{scope}' scope")


def build_authenticator(settings: AuthSettings, dev_key_path: Path, group_map_path: Path | None = None,
                        *, directory: GroupDirectory | None = None) -> Authenticator:
    """The authenticator for ``settings``; ``group_map_path`` overrides ``settings.group_map_path``."""
    path = group_map_path or settings.group_map_path
    resolver = ClaimsResolver(GroupMap.load(path) if path is not None else None, directory)
    if settings.mode == "dev":
        dev = DevIssuer(settings, dev_key_path)
        trusted = [TrustedIssuer(dev.issuer_settings, StaticKeys(dev.jwks()))]
        return Authenticator(TokenValidator(trusted, max_token_bytes=settings.max_token_bytes), resolver, dev)
    _check_issuers(settings)
    trusted = [
        TrustedIssuer(i, RemoteJwks(i, cooldown_s=settings.jwks_cooldown_s, max_age_s=settings.jwks_max_age_s,
                                    stale_grace_s=settings.jwks_stale_grace_s, timeout_s=settings.jwks_timeout_s))
        for i in settings.issuers
    ]
    return Authenticator(TokenValidator(trusted, max_token_bytes=settings.max_token_bytes), resolver)


def _check_issuers(settings: AuthSettings) -> None:
    issuers = settings.issuers
    if not issuers:
        raise ConfigError("auth.mode=oidc needs at least one issuer (CLEARANCE_AUTH__ISSUERS)")
    if len({i.issuer for i in issuers}) != len(issuers):
        raise ConfigError("auth.issuers lists the same issuer twice")
    if len(issuers) > 1:
        namespaces = [i.user_namespace for i in issuers]
        if "" in namespaces or len(set(namespaces)) != len(namespaces):
            raise ConfigError("with several issuers every issuer needs its own non-empty user_namespace")
