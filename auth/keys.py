"""Verification keys per issuer.

``StaticKeys`` serves a fixed JWKS (the dev issuer). ``RemoteJwks`` does OIDC discovery, caches
the JWKS honouring ``Cache-Control: max-age``, refetches on an unknown ``kid`` at most once per
cooldown (single-flight: concurrent misses share one fetch), keeps serving cached keys while
the IdP is down until they expire, then fails closed. Keys only ever come from the issuer's
configured JWKS: ``jku``/``x5u``/embedded ``jwk`` headers are never consulted.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any, Callable, Protocol

import httpx
from joserfc.jwk import KeySet

from core.errors import AuthenticationError, BackendUnavailableError
from core.settings import IssuerSettings


class KeySource(Protocol):
    def key_set(self, kid: str | None) -> KeySet:
        """A key set that contains ``kid`` if the issuer has it (may refetch once per cooldown)."""
        ...


class StaticKeys:
    def __init__(self, jwks: dict[str, Any]) -> None:
        self._keys = KeySet.import_key_set(jwks)

    def key_set(self, kid: str | None) -> KeySet:
        return self._keys


_MAX_AGE = re.compile(r"max-age=(\d+)")


class RemoteJwks:
    def __init__(
        self,
        issuer: IssuerSettings,
        *,
        cooldown_s: float,
        max_age_s: float,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self.cooldown_s = max(cooldown_s, 0.0)
        self.max_age_s = max_age_s
        self._http = http or httpx.Client(timeout=5.0, follow_redirects=False)
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._kids: set[str] = set()
        self._expires_at = 0.0
        self._last_fetch = float("-inf")
        self._jwks_uri = issuer.jwks_uri
        self.fetches = 0  # observable for tests and metrics

    def key_set(self, kid: str | None) -> KeySet:
        now = self._clock()
        keys = self._keys
        fresh = keys is not None and now < self._expires_at
        if fresh and (kid is None or kid in self._kids):
            return keys  # type: ignore[return-value]
        with self._lock:  # single flight: the first caller fetches, the others reuse its result
            now = self._clock()
            if self._keys is not None and now < self._expires_at and (kid is None or kid in self._kids):
                return self._keys
            if now - self._last_fetch >= self.cooldown_s:
                self._refresh(now)
            if self._keys is None or now >= self._expires_at:
                raise BackendUnavailableError("signing keys of the issuer are unavailable", code="jwks_unavailable")
            return self._keys

    def _refresh(self, now: float) -> None:
        self._last_fetch = now
        self.fetches += 1
        try:
            if not self._jwks_uri:
                disc = self._get(self.issuer.issuer.rstrip("/") + "/.well-known/openid-configuration")
                doc = disc.json()
                if doc.get("issuer") != self.issuer.issuer:
                    raise AuthenticationError("discovery document names another issuer")
                self._jwks_uri = str(doc["jwks_uri"])
            resp = self._get(self._jwks_uri)
            keys = KeySet.import_key_set(resp.json())
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return  # keep serving cached keys until they expire; then fail closed
        self._keys = keys
        self._kids = {k.kid for k in keys.keys if k.kid}
        self._expires_at = now + self._ttl(resp.headers.get("cache-control", ""))

    def _ttl(self, cache_control: str) -> float:
        m = _MAX_AGE.search(cache_control or "")
        ttl = float(m.group(1)) if m else self.max_age_s
        # Never trust keys for less than the refetch cooldown, nor longer than our own ceiling.
        return min(max(ttl, self.cooldown_s, 1.0), self.max_age_s)

    def _get(self, url: str) -> httpx.Response:
        resp = self._http.get(url, headers={"accept": "application/json"})
        resp.raise_for_status()
        return resp
