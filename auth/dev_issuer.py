"""Dev issuer for local use: an RSA key under the data dir, its JWKS, and token minting.

Tokens it mints go through the same ``TokenValidator`` as production; only the key source
differs (``StaticKeys`` from this key instead of a remote JWKS). They are RFC 9068 access tokens
(``typ: at+jwt``, with ``iat``), and the dev issuer's trust settings require ``at+jwt``. Its
``iss`` is ``auth.dev_issuer``, which ``clearance serve`` sets to the address it serves on
(``http://HOST:PORT/dev-issuer``, where the JWKS is published) unless configured explicitly.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

from core.settings import AuthSettings, IssuerSettings


class DevIssuer:
    def __init__(self, settings: AuthSettings, key_path: Path) -> None:
        self.settings = settings
        self.key = _load_or_create(key_path)

    @property
    def issuer_settings(self) -> IssuerSettings:
        return IssuerSettings(
            issuer=self.settings.dev_issuer,
            audience=self.settings.dev_audience,
            algorithms=["RS256"],
            tenant=self.settings.dev_tenant,
            require_at_jwt=True,
        )

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    def mint(
        self,
        sub: str,
        *,
        groups: list[str] | None = None,
        roles: list[str] | None = None,
        scopes: list[str] | None = None,
        tenant: str | None = None,
        ttl_s: int | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.settings.dev_issuer,
            "aud": self.settings.dev_audience,
            "sub": sub,
            "iat": now,
            "nbf": now,
            "exp": now + (ttl_s or self.settings.dev_token_ttl_s),
            "jti": uuid.uuid4().hex,
            "groups": groups or [],
            "roles": roles or [],
            "scope": " ".join(scopes if scopes is not None else ["clearance:search"]),
            "tenant": tenant or self.settings.dev_tenant,
        }
        header = {"alg": "RS256", "typ": "at+jwt", "kid": self.key.kid}
        return jwt.encode(header, claims, self.key, algorithms=["RS256"])


def _load_or_create(path: Path) -> RSAKey:
    if path.exists():
        pem = path.read_bytes()
        key = RSAKey.import_key(pem)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = RSAKey.generate_key(2048, private=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.as_pem(private=True))
        os.replace(tmp, path)
    key.ensure_kid()
    return key
