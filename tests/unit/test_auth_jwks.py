"""``RemoteJwks`` against a real JWKS server on loopback, with an injected clock.

The server is ``http.server`` in a thread (``testkit.oidc.harness.JwksServer``); every fetch is a
real HTTP request, counted on the server side. Time is a ``FakeClock`` handed to
``RemoteJwks``, so cache lifetimes of minutes are tested without sleeping; token ``exp``/``iat``
still use the wall clock, which is what the validator reads.

Decision under test (documented in ``auth/keys.py`` and docs/auth.md): when no usable key is
left (IdP down past the stale grace, or never reached) requests fail closed with 503
``jwks_unavailable`` and ``Retry-After``, not 401: the token may be fine and the client should
retry, not throw it away.
"""

from __future__ import annotations

import dataclasses
import email.utils
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from app.services import build_services
from auth.authenticator import Authenticator
from auth.keys import RemoteJwks
from auth.principals import ClaimsResolver
from auth.validator import TokenValidator, TrustedIssuer
from core.errors import AuthenticationError, BackendUnavailableError
from core.settings import AuthSettings, IssuerSettings
from testkit.oidc.harness import JwksServer, claims, compact, jwks, mint, rsa_key
from tests.conftest import LiveServer, make_settings

K1, K2 = rsa_key("k1"), rsa_key("k2")
ATTACKER = rsa_key("attacker")


class FakeClock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def idp() -> Iterator[JwksServer]:
    with JwksServer(jwks(K1), cache_control="max-age=120") as server:
        yield server


def _cfg(server: JwksServer, **extra: object) -> IssuerSettings:
    return IssuerSettings(issuer=server.issuer, tenant="acme", algorithms=["RS256"], **extra)  # type: ignore[arg-type]


def _remote(server: JwksServer, clock: FakeClock, *, cooldown_s: float = 30, max_age_s: float = 3600,
            stale_grace_s: float = 300, **cfg: object) -> RemoteJwks:
    return RemoteJwks(_cfg(server, **cfg), cooldown_s=cooldown_s, max_age_s=max_age_s,
                      stale_grace_s=stale_grace_s, clock=clock)


def _validator(keys: RemoteJwks) -> TokenValidator:
    return TokenValidator([TrustedIssuer(keys.issuer, keys)], max_token_bytes=8192)


def _token(server: JwksServer, key: object, **extra: object) -> str:
    return mint(key, claims(server.issuer, **extra))  # type: ignore[arg-type]


# ------------------------------------------------------------------ cache lifetime

def test_fresh_keys_are_served_without_io_for_max_age(idp: JwksServer, clock: FakeClock) -> None:
    keys = _remote(idp, clock)
    assert [k.kid for k in keys.key_set("k1").keys] == ["k1"]
    assert idp.hits == {"/.well-known/openid-configuration": 1, "/jwks": 1}
    clock.advance(119)
    keys.key_set("k1")
    assert idp.jwks_fetches == 1
    clock.advance(2)  # past max-age=120
    keys.key_set("k1")
    assert idp.jwks_fetches == 2
    assert idp.hits["/.well-known/openid-configuration"] == 1  # discovery is not repeated


@pytest.mark.parametrize("headers, fresh_s", [
    ({"Cache-Control": "public, max-age=300", "Age": "250"}, 50),          # max-age minus Age
    ({"Cache-Control": "no-store"}, 30),                                    # floor: the cooldown
    ({"Cache-Control": "no-cache, max-age=600"}, 30),
    ({"Cache-Control": "max-age=999999"}, 600),                             # ceiling: jwks_max_age_s
    ({}, 600),                                                              # no header: the ceiling
])
def test_cache_headers_set_freshness(idp: JwksServer, clock: FakeClock, headers: dict[str, str], fresh_s: int) -> None:
    idp.headers = headers
    keys = _remote(idp, clock, max_age_s=600)
    keys.key_set("k1")
    clock.advance(fresh_s - 1)
    keys.key_set("k1")
    assert idp.jwks_fetches == 1
    clock.advance(2)
    keys.key_set("k1")
    assert idp.jwks_fetches == 2


def test_expires_header_is_used_without_max_age(idp: JwksServer, clock: FakeClock) -> None:
    idp.headers = {"Expires": email.utils.formatdate(time.time() + 90, usegmt=True)}
    keys = _remote(idp, clock)
    keys.key_set("k1")
    clock.advance(80)
    keys.key_set("k1")
    assert idp.jwks_fetches == 1
    clock.advance(15)
    keys.key_set("k1")
    assert idp.jwks_fetches == 2


# ------------------------------------------------------------------ unknown kids

def test_flood_of_random_kids_costs_one_fetch_per_cooldown(idp: JwksServer, clock: FakeClock) -> None:
    keys = _remote(idp, clock)
    validator = _validator(keys)
    genuine = _token(idp, K1)
    validator.validate(genuine)
    assert idp.jwks_fetches == 1
    idp.delay_s = 0.2  # a slow IdP makes concurrent misses pile up behind the one fetch
    errors: list[BaseException] = []

    def flood(worker: int) -> None:
        for i in range(50):  # 10 threads x 50 = 500 random kids per round
            token = mint(ATTACKER, claims(idp.issuer), kid=os.urandom(6).hex())
            try:
                validator.validate(token)
                errors.append(AssertionError("forged token accepted"))
            except AuthenticationError:
                pass
            except BaseException as exc:  # noqa: BLE001 - anything else is a failure
                errors.append(exc)
            if i % 10 == 0:
                validator.validate(genuine)  # genuine tokens keep working during the flood

    for round_no in (1, 2):
        clock.advance(31)  # the cooldown since the last fetch has passed
        threads = [threading.Thread(target=flood, args=(w,)) for w in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        assert idp.jwks_fetches == 1 + round_no, "one fetch per cooldown, however many unknown kids"
        assert keys.fetches == 1 + round_no


def test_concurrent_misses_share_one_fetch(idp: JwksServer, clock: FakeClock) -> None:
    """Single flight, even with no cooldown at all: callers queued behind a fetch reuse it."""
    keys = _remote(idp, clock, cooldown_s=0)
    idp.delay_s = 0.5
    start = threading.Barrier(12)
    seen: list[list[str]] = []

    def miss() -> None:
        start.wait()
        seen.append([k.kid for k in keys.key_set("k1").keys])

    threads = [threading.Thread(target=miss) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [["k1"]] * 12
    assert idp.jwks_fetches == 1


def test_unknown_kid_within_cooldown_does_not_fetch(idp: JwksServer, clock: FakeClock) -> None:
    keys = _remote(idp, clock)
    validator = _validator(keys)
    validator.validate(_token(idp, K1))
    for _ in range(20):
        with pytest.raises(AuthenticationError, match="unknown signing key"):
            validator.validate(mint(ATTACKER, claims(idp.issuer), kid=os.urandom(4).hex()))
    assert idp.jwks_fetches == 1


# ------------------------------------------------------------------ rotation

def test_rotation_is_picked_up_with_one_fetch(idp: JwksServer, clock: FakeClock) -> None:
    keys = _remote(idp, clock)
    validator = _validator(keys)
    old = _token(idp, K1)
    validator.validate(old)
    idp.jwks = jwks(K2, K1)  # the IdP publishes k2 and starts signing with it
    clock.advance(31)
    new = _token(idp, K2)
    assert validator.validate(new).header["kid"] == "k2"
    assert idp.jwks_fetches == 2
    validator.validate(new)
    validator.validate(old)  # still published: still accepted
    assert idp.jwks_fetches == 2


def test_rotation_inside_the_cooldown_is_accepted_once_it_ends(idp: JwksServer, clock: FakeClock) -> None:
    """The price of flood protection: a new kid seen right after a fetch waits for the cooldown."""
    keys = _remote(idp, clock)
    validator = _validator(keys)
    validator.validate(_token(idp, K1))
    idp.jwks = jwks(K2, K1)
    new = _token(idp, K2)
    clock.advance(10)
    with pytest.raises(AuthenticationError, match="unknown signing key"):
        validator.validate(new)
    assert idp.jwks_fetches == 1
    clock.advance(20)
    validator.validate(new)
    assert idp.jwks_fetches == 2


def test_retired_key_stops_working_after_refresh(idp: JwksServer, clock: FakeClock) -> None:
    keys = _remote(idp, clock)
    validator = _validator(keys)
    old = _token(idp, K1)
    validator.validate(old)
    idp.jwks = jwks(K2)
    clock.advance(121)  # cache expired: the next request refreshes and k1 is gone
    with pytest.raises(AuthenticationError, match="unknown signing key"):
        validator.validate(old)
    validator.validate(_token(idp, K2))


# ------------------------------------------------------------------ IdP down

def test_idp_down_cached_keys_serve_until_grace_then_fail_closed(idp: JwksServer, clock: FakeClock) -> None:
    keys = _remote(idp, clock, stale_grace_s=300)  # max-age=120 from the server
    validator = _validator(keys)
    token = _token(idp, K1, exp=int(time.time()) + 3600)
    validator.validate(token)
    idp.status = 503
    clock.advance(121)  # stale: a refresh is tried, fails, cached keys still serve
    validator.validate(token)
    assert idp.jwks_fetches == 2
    clock.advance(10)  # inside the cooldown: no new attempt
    validator.validate(token)
    assert idp.jwks_fetches == 2
    clock.advance(288)  # 419 s after the fetch: still inside 120 + 300
    validator.validate(token)
    clock.advance(2)  # 421 s: past fresh + grace
    with pytest.raises(BackendUnavailableError) as err:
        validator.validate(token)
    assert err.value.code == "jwks_unavailable" and err.value.status == 503
    idp.status = 200
    clock.advance(30)
    validator.validate(token)  # recovers by itself once the IdP is back


def test_stale_if_error_shortens_the_grace(idp: JwksServer, clock: FakeClock) -> None:
    idp.headers = {"Cache-Control": "max-age=60, stale-if-error=40"}
    keys = _remote(idp, clock, stale_grace_s=3600)
    keys.key_set("k1")
    idp.status = 500
    clock.advance(99)
    keys.key_set("k1")
    clock.advance(2)
    with pytest.raises(BackendUnavailableError):
        keys.key_set("k1")


def test_idp_unreachable_at_start_fails_closed_then_recovers(clock: FakeClock) -> None:
    with JwksServer(jwks(K1)) as idp:
        idp.status = 503
        keys = _remote(idp, clock)
        with pytest.raises(BackendUnavailableError):
            keys.key_set("k1")
        idp.status = 200
        clock.advance(5)
        with pytest.raises(BackendUnavailableError):  # within the cooldown: no new attempt
            keys.key_set("k1")
        clock.advance(30)
        assert keys.key_set("k1").keys[0].kid == "k1"


def test_idp_gone_through_the_api_200_then_503(clock: FakeClock, tmp_path: Path) -> None:
    """The same behaviour over HTTP: connection refused, stale keys serve, then 503 + Retry-After."""
    idp = JwksServer(jwks(K1), cache_control="max-age=60")
    idp.__enter__()
    cfg = _cfg(idp)
    settings = make_settings(tmp_path, auth=AuthSettings(mode="oidc", issuers=[cfg]))
    services = build_services(settings)
    keys = RemoteJwks(cfg, cooldown_s=30, max_age_s=3600, stale_grace_s=120, clock=clock)
    services = dataclasses.replace(services, auth=Authenticator(_validator(keys), ClaimsResolver()))
    token = _token(idp, K1, exp=int(time.time()) + 3600)
    try:
        with LiveServer(create_app(settings, services)) as server:
            def whoami() -> httpx.Response:
                return httpx.get(f"{server.url}/v1/whoami", headers={"authorization": f"Bearer {token}"}, timeout=10)

            assert whoami().status_code == 200
            idp.__exit__(None, None, None)  # the IdP is gone: connections are refused
            clock.advance(61)
            assert whoami().status_code == 200
            clock.advance(120)
            resp = whoami()
            assert resp.status_code == 503
            assert resp.json()["error"]["code"] == "jwks_unavailable"
            assert int(resp.headers["retry-after"]) >= 1
    finally:
        services.close()


# ------------------------------------------------------------------ what is accepted from the IdP

def test_discovery_must_name_the_configured_issuer(idp: JwksServer, clock: FakeClock) -> None:
    idp.discovery_issuer = "https://evil.example"
    keys = _remote(idp, clock)
    with pytest.raises(BackendUnavailableError):
        keys.key_set("k1")
    assert idp.jwks_fetches == 0


def test_configured_jwks_uri_skips_discovery(idp: JwksServer, clock: FakeClock) -> None:
    keys = _remote(idp, clock, jwks_uri=idp.issuer + "/jwks")
    keys.key_set("k1")
    assert idp.hits == {"/jwks": 1}


def test_only_public_signing_keys_are_imported(idp: JwksServer, clock: FakeClock) -> None:
    enc = rsa_key("enc")
    secret = os.urandom(32)
    idp.jwks = {"keys": [
        {"kty": "oct", "kid": "hs", "k": compact({}, secret).split(".")[1]},  # symmetric: dropped
        {**enc.as_dict(private=False), "use": "enc"},                          # encryption key: dropped
        K1.as_dict(private=True),                                               # private parts: stripped
        {"kty": "RSA", "kid": "broken", "n": "AQAB"},                           # malformed: dropped
    ]}
    keys = _remote(idp, clock)
    imported = keys.key_set(None).keys
    assert [k.kid for k in imported] == ["k1"]
    assert imported[0].is_private is False and "d" not in imported[0].as_dict()
    validator = _validator(keys)
    with pytest.raises(AuthenticationError):
        validator.validate(mint(enc, claims(idp.issuer)))
    validator.validate(_token(idp, K1))


@pytest.mark.parametrize("body", [b"not json", b'{"keys": "nope"}', b'{"keys": []}', b"[" * 100,
                                  b'{"keys": [], "pad": "' + b"x" * (600 * 1024) + b'"}'])
def test_bad_jwks_documents_are_failed_fetches(idp: JwksServer, clock: FakeClock, body: bytes) -> None:
    keys = _remote(idp, clock)
    keys.key_set("k1")
    idp.body = body
    clock.advance(121)
    keys.key_set("k1")  # the bad document did not replace the good keys
    assert idp.jwks_fetches == 2
    fresh = _remote(idp, clock)
    with pytest.raises(BackendUnavailableError):
        fresh.key_set("k1")
