"""Strict access-token validation (joserfc does the JOSE work; nothing here is hand-rolled crypto).

Invariant: a token yields claims only if all of these hold, else ``AuthenticationError`` (401,
a fixed message) and never a 500:

- it is a JWS in compact form of at most ``max_token_bytes`` ASCII characters, three non-empty
  base64url segments decoding (strictly, canonical padding bits) to a JSON object header and a
  JSON object payload. Five segments (JWE) and anything else are refused;
- its unverified ``iss`` names a configured issuer exactly; that only picks the key source, the
  verified ``iss`` is checked again;
- ``alg`` is in that issuer's allow-list (asymmetric only: no ``none``, no ``HS*``, so a public
  key can never be used as an HMAC secret); no ``crit`` header at all (we implement no
  extension) and no ``b64`` header (RFC 7797 payloads are not JWTs);
- ``typ`` is ``at+jwt`` (RFC 9068), or, unless ``require_at_jwt``, ``JWT`` or absent; any other
  ``typ`` (``logout+jwt``, ``dpop+jwt``, ...) is refused;
- the signature verifies with a key from the issuer's own key source, chosen by ``kid`` (or the
  only key when there is no ``kid``), whose type and curve fit ``alg`` and whose ``alg``, if
  set, equals it. ``jku``, ``x5u``, ``x5c`` and ``jwk`` headers are never used to find a key;
- the verified claims pass ``iss`` (exact), ``aud`` (contains the issuer's audience), ``exp``
  and ``iat`` (both required, RFC 9068 §2.2), ``nbf`` and ``iat`` not in the future, all with
  the issuer's leeway, and ``sub`` is present;
- it is not an ID token (``nonce``, ``at_hash``, ``c_hash``, Keycloak ``typ: ID``, Cognito
  ``token_use: id``) unless the issuer sets ``accept_id_tokens``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet
from joserfc.jwt import JWTClaimsRegistry
from joserfc.util import urlsafe_b64decode

from auth.errors import token_error
from auth.keys import KeySource
from core.settings import IssuerSettings

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_MAX_HEADER_CHARS = 4096
# JWS alg -> (JWK kty, EC curve or None)
_KEY_FOR_ALG: dict[str, tuple[str, str | None]] = {
    **{f"RS{n}": ("RSA", None) for n in (256, 384, 512)},
    **{f"PS{n}": ("RSA", None) for n in (256, 384, 512)},
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}


@dataclass(frozen=True)
class TrustedIssuer:
    settings: IssuerSettings
    keys: KeySource


@dataclass(frozen=True)
class ValidatedToken:
    """A token whose signature and claims passed; ``claims`` are the verified payload."""

    issuer: IssuerSettings
    header: dict[str, object]
    claims: dict[str, object]


class TokenValidator:
    def __init__(self, issuers: list[TrustedIssuer], *, max_token_bytes: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._issuers = {i.settings.issuer: i for i in issuers}
        self.max_token_bytes = max_token_bytes
        self._clock = clock

    def key_source(self, issuer: str) -> KeySource | None:
        """The key source of a configured issuer (for metrics and tests)."""
        trusted = self._issuers.get(issuer)
        return trusted.keys if trusted is not None else None

    def validate(self, token: str) -> ValidatedToken:
        header, payload = self._parse(token)
        iss = payload.get("iss")
        trusted = self._issuers.get(iss) if isinstance(iss, str) else None
        if trusted is None:
            raise token_error("unknown issuer")
        cfg = trusted.settings
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in cfg.algorithms:
            raise token_error("algorithm not allowed")
        if "crit" in header:
            raise token_error("unsupported critical header")
        if "b64" in header:
            raise token_error("unencoded payloads are not accepted")
        self._check_type(cfg, header)
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or not kid):
            raise token_error("malformed key id")
        candidates = _candidates(trusted.keys.key_set(kid), kid, alg)
        if not candidates:
            raise token_error("unknown signing key")
        registry = jws.JWSRegistry(algorithms=[alg], strict_check_header=False)
        registry.max_header_length = _MAX_HEADER_CHARS
        registry.max_payload_length = self.max_token_bytes
        verified: bytes | None = None
        for key in candidates:
            try:
                obj = jws.deserialize_compact(token, key, algorithms=[alg], registry=registry)
            except (JoseError, ValueError, TypeError, KeyError):
                continue
            verified = obj.payload
            break
        if verified is None:
            raise token_error("signature verification failed")
        claims = _json_object(verified)
        self._check_claims(cfg, claims)
        return ValidatedToken(cfg, header, claims)

    def _parse(self, token: str) -> tuple[dict[str, object], dict[str, object]]:
        if not isinstance(token, str) or not token:
            raise token_error("token missing")
        if len(token) > self.max_token_bytes:
            raise token_error("token too large")
        parts = token.split(".")
        if len(parts) == 5:
            raise token_error("encrypted tokens (JWE) are not accepted")
        if len(parts) != 3 or not all(_SEGMENT.fullmatch(p) for p in parts):
            raise token_error("token is not a signed JWT (JWS compact)")
        if len(parts[0]) > _MAX_HEADER_CHARS:
            raise token_error("token header too large")
        return _json_segment(parts[0]), _json_segment(parts[1])

    @staticmethod
    def _check_type(cfg: IssuerSettings, header: dict[str, object]) -> None:
        typ = header.get("typ")
        if typ is None:
            if cfg.require_at_jwt:
                raise token_error("not an access token (typ)")
            return
        if not isinstance(typ, str):
            raise token_error("malformed typ header")
        t = typ.lower().removeprefix("application/")
        if t == "at+jwt" or (t == "jwt" and not cfg.require_at_jwt):
            return
        raise token_error("not an access token (typ)")

    def _check_claims(self, cfg: IssuerSettings, claims: dict[str, object]) -> None:
        registry = JWTClaimsRegistry(
            now=lambda: int(self._clock()),
            leeway=cfg.leeway_s,
            iss={"essential": True, "value": cfg.issuer},
            aud={"essential": True, "value": cfg.audience},
            exp={"essential": True},
            iat={"essential": True},  # RFC 9068 §2.2: access tokens carry iat
            sub={"essential": True},
        )
        try:
            registry.validate(claims)
        except (JoseError, ValueError, TypeError, OverflowError):
            raise token_error("token claims are invalid or expired") from None
        if not cfg.accept_id_tokens and _looks_like_id_token(claims):
            raise token_error("ID tokens are not accepted")


def _looks_like_id_token(claims: dict[str, object]) -> bool:
    return (any(k in claims for k in ("nonce", "at_hash", "c_hash"))
            or claims.get("typ") == "ID" or claims.get("token_use") == "id")


def _candidates(keys: KeySet, kid: str | None, alg: str) -> list[Key]:
    """Keys of the issuer that may verify ``alg`` for this ``kid`` (never from token headers)."""
    kty, crv = _KEY_FOR_ALG[alg]
    pool = [k for k in keys.keys if k.kid == kid] if kid is not None else (keys.keys if len(keys.keys) == 1 else [])
    out = []
    for k in pool:
        d = k.as_dict(private=False)
        if d.get("kty") != kty or (crv is not None and d.get("crv") != crv):
            continue
        if d.get("alg") not in (None, alg) or d.get("use") not in (None, "sig"):
            continue
        out.append(k)
    return out


def _json_segment(seg: str) -> dict[str, object]:
    try:
        raw = urlsafe_b64decode(seg.encode("ascii"))
    except (ValueError, TypeError):
        raise token_error("malformed token (base64)") from None
    return _json_object(raw)


def _json_object(raw: bytes) -> dict[str, object]:
    try:
        value = json.loads(raw, parse_constant=_no_constants, object_pairs_hook=_unique_keys)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise token_error("malformed token (JSON)") from None
    if not isinstance(value, dict):
        raise token_error("malformed token (not a JSON object)")
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate member names")  # parsers disagree on which one wins
    return out


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")
