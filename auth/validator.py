"""Strict access-token validation (joserfc; no hand-rolled crypto).

Invariant: a token yields claims only if it is a compact JWS of bounded size, from a configured
issuer (exact ``iss``), signed with an allowed asymmetric algorithm by a key from that issuer's
own JWKS (selected by ``kid``; ``jku``/``x5u``/``jwk`` headers are ignored), carries no unknown
``crit`` header, is an access token (``typ: at+jwt``/``JWT``; ID tokens only if configured),
and passes ``aud``, ``exp``, ``nbf`` and ``iat`` with the issuer's leeway. Everything else is an
``AuthenticationError`` (401), never a 500.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jws import JWSRegistry
from joserfc.jwt import JWTClaimsRegistry

from auth.keys import KeySource
from core.errors import AuthenticationError
from core.settings import IssuerSettings

_ACCESS_TYPES = {"at+jwt", "application/at+jwt", "jwt"}
_KNOWN_CRIT: set[str] = set()  # we understand no critical extensions


@dataclass(frozen=True)
class TrustedIssuer:
    settings: IssuerSettings
    keys: KeySource


@dataclass(frozen=True)
class ValidatedToken:
    issuer: IssuerSettings
    header: dict[str, Any]
    claims: dict[str, Any]


class TokenValidator:
    def __init__(self, issuers: list[TrustedIssuer], *, max_token_bytes: int) -> None:
        self._issuers = {i.settings.issuer: i for i in issuers}
        self.max_token_bytes = max_token_bytes

    def validate(self, token: str) -> ValidatedToken:
        if not token or len(token) > self.max_token_bytes:
            raise AuthenticationError("token missing or too large")
        parts = token.split(".")
        if len(parts) != 3:
            raise AuthenticationError("token is not a signed JWT (JWS compact)")
        header = _json_segment(parts[0])
        unverified = _json_segment(parts[1])
        iss = unverified.get("iss")
        trusted = self._issuers.get(iss) if isinstance(iss, str) else None
        if trusted is None:
            raise AuthenticationError("unknown issuer")
        cfg = trusted.settings
        alg = header.get("alg")
        if alg not in cfg.algorithms:
            raise AuthenticationError("algorithm not allowed")
        if "crit" in header and (not isinstance(header["crit"], list) or set(header["crit"]) - _KNOWN_CRIT):
            raise AuthenticationError("unsupported critical header")
        typ = str(header.get("typ", "")).lower()
        if typ not in _ACCESS_TYPES and not (cfg.accept_id_tokens and typ == ""):
            raise AuthenticationError("not an access token")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationError("malformed key id")
        keys = trusted.keys.key_set(kid)
        try:
            key = keys.get_by_kid(kid) if kid else _only_key(keys)
        except (JoseError, ValueError, KeyError):
            raise AuthenticationError("unknown signing key") from None
        try:
            decoded = jwt.decode(token, key, algorithms=cfg.algorithms, registry=JWSRegistry(algorithms=cfg.algorithms))
        except (JoseError, ValueError, TypeError, KeyError):
            raise AuthenticationError("signature verification failed") from None
        claims = dict(decoded.claims)
        self._check_claims(cfg, claims)
        return ValidatedToken(cfg, dict(decoded.header), claims)

    @staticmethod
    def _check_claims(cfg: IssuerSettings, claims: dict[str, Any]) -> None:
        registry = JWTClaimsRegistry(
            now=lambda: int(time.time()),
            leeway=cfg.leeway_s,
            iss={"essential": True, "value": cfg.issuer},
            aud={"essential": True, "value": cfg.audience},
            exp={"essential": True},
            sub={"essential": True},
        )
        try:
            registry.validate(claims)
        except (JoseError, ValueError, TypeError):
            raise AuthenticationError("token claims are invalid or expired") from None
        iat = claims.get("iat")
        if iat is not None and (not isinstance(iat, (int, float)) or iat > time.time() + cfg.leeway_s):
            raise AuthenticationError("token issued in the future")
        nbf = claims.get("nbf")
        if nbf is not None and not isinstance(nbf, (int, float)):
            raise AuthenticationError("malformed nbf")
        if not cfg.accept_id_tokens and ("nonce" in claims or "at_hash" in claims):
            raise AuthenticationError("ID tokens are not accepted")


def _only_key(keys: Any) -> Any:
    if len(keys.keys) != 1:
        raise KeyError("token has no kid and the issuer has several keys")
    return keys.keys[0]


def _json_segment(seg: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise AuthenticationError("malformed token") from None
    if not isinstance(value, dict):
        raise AuthenticationError("malformed token")
    return value
