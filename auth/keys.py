"""Verification keys per issuer.

``StaticKeys`` serves a fixed JWKS (the dev issuer, tests). ``RemoteJwks`` serves the issuer's
published JWKS. Its invariants:

- Keys only ever come from the configured ``jwks_uri`` or the one named by the issuer's own
  discovery document (whose ``issuer`` must equal the configured issuer exactly). ``jku``,
  ``x5u`` and embedded ``jwk`` headers are never consulted. Symmetric (``oct``) keys, keys
  marked ``use: enc`` and private key material are dropped on import.
- Fresh keys are served without I/O. Freshness follows the response's ``Cache-Control``
  (``max-age`` minus ``Age``; ``no-cache``/``no-store`` mean "as short as allowed"), else
  ``Expires``, else ``jwks_max_age_s``, clamped to ``[cooldown_s, jwks_max_age_s]``.
- At most one fetch per ``cooldown_s``, whatever triggers it (stale keys or an unknown ``kid``),
  and single-flight: callers that waited while another fetched reuse its result. A flood of
  tokens with random kids therefore costs one request to the IdP per cooldown.
- When a refresh fails (IdP down, bad JSON, no usable key) the previous keys keep serving, for
  ``stale_grace_s`` past their freshness (``stale-if-error`` lowers that when the IdP says so);
  after that, or when no key was ever fetched, ``key_set`` raises ``BackendUnavailableError``
  (503 ``jwks_unavailable``, Retry-After): fail closed, and not a 401, since the token may well
  be valid and the client should retry rather than re-authenticate.
"""

from __future__ import annotations

import email.utils
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from core.errors import BackendUnavailableError
from core.logging import Log
from core.settings import IssuerSettings

log = Log("clearance.auth.jwks")

MAX_JWKS_BYTES = 512 * 1024
_PUBLIC_KTY = {"RSA", "EC", "OKP"}


class KeySource(Protocol):
    def key_set(self, kid: str | None) -> KeySet:
        """A key set that contains ``kid`` if the issuer has it (may refetch once per cooldown).

        Raises ``BackendUnavailableError`` when no usable keys are known (fail closed).
        """
        ...


def import_public_keys(jwks: Any) -> KeySet:
    """The usable verification keys of a JWKS document; unusable entries are skipped.

    Raises ``ValueError`` when the document is not a JWKS or holds no usable key.
    """
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError("not a JWK set")
    usable: list[dict[str, Any]] = []
    for entry in jwks["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") not in _PUBLIC_KTY or entry.get("use", "sig") != "sig":
            continue
        try:
            one = KeySet.import_key_set({"keys": [entry]}).keys[0]
            usable.append(one.as_dict(private=False))
        except (JoseError, ValueError, TypeError, KeyError):
            continue
    if not usable:
        raise ValueError("no usable signing key in the JWK set")
    return KeySet.import_key_set({"keys": usable})


class StaticKeys:
    """A fixed JWKS, imported with the same filtering as remote ones."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self._keys = import_public_keys(jwks)

    def key_set(self, kid: str | None) -> KeySet:
        return self._keys


@dataclass(frozen=True)
class _Snapshot:
    keys: KeySet
    kids: frozenset[str]
    fresh_until: float
    usable_until: float


_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)", re.I)
_STALE_IF_ERROR = re.compile(r"(?:^|,)\s*stale-if-error\s*=\s*\"?(\d+)", re.I)
_NO_CACHE = re.compile(r"(?:^|,)\s*(no-cache|no-store)\b", re.I)


class RemoteJwks:
    """The JWKS of one OIDC issuer, cached (see the module docstring for the invariants)."""

    def __init__(
        self,
        issuer: IssuerSettings,
        *,
        cooldown_s: float,
        max_age_s: float,
        stale_grace_s: float = 3600.0,
        timeout_s: float = 5.0,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self.cooldown_s = max(cooldown_s, 0.0)
        self.max_age_s = max(max_age_s, self.cooldown_s)
        self.stale_grace_s = max(stale_grace_s, 0.0)
        self._http = http or httpx.Client(timeout=timeout_s, follow_redirects=False)
        self._clock = clock
        self._lock = threading.Lock()
        self._snap: _Snapshot | None = None
        self._last_attempt = float("-inf")
        self._generation = 0  # bumped by every fetch attempt; lets waiters reuse a fetch
        self._jwks_uri = issuer.jwks_uri
        self.fetches = 0  # fetch attempts; observable for tests and metrics

    def key_set(self, kid: str | None) -> KeySet:
        snap, now = self._snap, self._clock()
        if snap is not None and self._serves(snap, kid, now):
            return snap.keys
        generation = self._generation
        with self._lock:  # single flight
            now = self._clock()
            if self._generation == generation and now - self._last_attempt >= self.cooldown_s:
                snap = self._snap
                if snap is None or now >= snap.fresh_until or (kid is not None and kid not in snap.kids):
                    self._refresh(now)
            snap = self._snap
        if snap is None or now >= snap.usable_until:
            raise BackendUnavailableError("signing keys of the issuer are unavailable", code="jwks_unavailable",
                                          retry_after_s=max(1, int(self.cooldown_s) or 1))
        return snap.keys

    def _serves(self, snap: _Snapshot, kid: str | None, now: float) -> bool:
        """Serve without locking: fresh keys that know ``kid``, or stale ones inside cooldown."""
        if kid is not None and kid not in snap.kids:
            return False
        if now < snap.fresh_until:
            return True
        return now < snap.usable_until and now - self._last_attempt < self.cooldown_s

    def _refresh(self, now: float) -> None:
        """One fetch attempt (caller holds the lock). The generation moves when it is over, so
        a caller that read the generation before or during this fetch will not repeat it."""
        self._last_attempt = now
        self.fetches += 1
        try:
            self._fetch(now)
        finally:
            self._generation += 1

    def _fetch(self, now: float) -> None:
        try:
            uri = self._jwks_uri or self._discover()
            status, headers, body = self._get(uri)
            keys = import_public_keys(json.loads(body))
        except (httpx.HTTPError, ValueError, KeyError, TypeError, RecursionError) as exc:
            log.warning("auth.jwks.fetch_failed", issuer=self.issuer.issuer, error=type(exc).__name__,
                        detail=str(exc)[:120] if isinstance(exc, _DiscoveryError) else "")
            return  # keep serving cached keys until they are no longer usable; then fail closed
        self._jwks_uri = uri
        ttl, grace = self._ttl(headers)
        self._snap = _Snapshot(keys, frozenset(k.kid for k in keys.keys if k.kid), now + ttl, now + ttl + grace)
        log.info("auth.jwks.fetched", issuer=self.issuer.issuer, status=status, keys=len(keys.keys), ttl_s=round(ttl, 1))

    def _discover(self) -> str:
        base = self.issuer.issuer.rstrip("/")
        _, _, body = self._get(base + "/.well-known/openid-configuration")
        doc = json.loads(body)
        if not isinstance(doc, dict) or doc.get("issuer") != self.issuer.issuer:
            raise _DiscoveryError("discovery document names another issuer")
        uri = doc.get("jwks_uri")
        if not isinstance(uri, str) or not _acceptable_uri(uri, self.issuer.issuer):
            raise _DiscoveryError("discovery document has no acceptable jwks_uri")
        return uri

    def _ttl(self, headers: httpx.Headers) -> tuple[float, float]:
        cc = headers.get("cache-control", "")
        ttl: float = self.max_age_s
        if _NO_CACHE.search(cc):
            ttl = 0.0
        elif (m := _MAX_AGE.search(cc)) is not None:
            ttl = float(m.group(1)) - _int(headers.get("age"))
        elif "expires" in headers:
            ttl = _expires_in(headers.get("expires", ""), headers.get("date", ""))
        ttl = min(max(ttl, self.cooldown_s), self.max_age_s)
        grace = self.stale_grace_s
        if (s := _STALE_IF_ERROR.search(cc)) is not None:
            grace = min(grace, float(s.group(1)))
        return ttl, grace

    def _get(self, url: str) -> tuple[int, httpx.Headers, bytes]:
        with self._http.stream("GET", url, headers={"accept": "application/json"}) as resp:
            resp.raise_for_status()
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > MAX_JWKS_BYTES:
                    raise _DiscoveryError("response too large")
                chunks.append(chunk)
            return resp.status_code, resp.headers, b"".join(chunks)


class _DiscoveryError(ValueError):
    pass


def _acceptable_uri(uri: str, issuer: str) -> bool:
    """https, or http only when the issuer itself is http (loopback tests, dev)."""
    parts = urlsplit(uri)
    return bool(parts.netloc) and (parts.scheme == "https" or (parts.scheme == "http" and issuer.startswith("http://")))


def _int(value: str | None) -> int:
    try:
        return max(int(value or 0), 0)
    except ValueError:
        return 0


def _expires_in(expires: str, date: str) -> float:
    try:
        exp = email.utils.parsedate_to_datetime(expires)
        ref = email.utils.parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError, IndexError):
        return 0.0  # an unparseable Expires means "already expired" (RFC 9111 5.3)
    if ref is None or exp.tzinfo is None or ref.tzinfo is None:
        return exp.timestamp() - time.time() if exp.tzinfo is not None else 0.0
    return (exp - ref).total_seconds()
