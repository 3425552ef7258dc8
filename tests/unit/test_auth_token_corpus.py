"""Forged and malformed tokens: every one is refused with 401, directly and through the app.

The corpus and its loopback issuer live in ``battery/token_corpus.py`` (shared with
``python -m battery.tokens``, which replays it at scale): discovery and JWKS served over loopback
HTTP and fetched by the production ``RemoteJwks``. The same validator object is used directly
(``TokenValidator``) and inside the real FastAPI app behind uvicorn (``GET /v1/whoami``). Three
genuine tokens (RS256, PS256, ES256) are accepted, so a rejection below is about the forgery,
not the setup.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from api.app import create_app
from app.services import Services, build_services
from auth.keys import RemoteJwks, StaticKeys
from auth.validator import TokenValidator, TrustedIssuer
from battery.token_corpus import (
    CASES,
    REJECT_CODES,
    SAFE_CHALLENGE,
    Ctx,
    corpus_context,
    issuer_settings,
    swap_header,
)
from core.errors import AuthenticationError
from core.settings import AuthSettings
from testkit.oidc.harness import DROP, b64, jwks, mint, segment, signature
from tests.conftest import LiveServer, make_settings

# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def ctx() -> Iterator[Ctx]:
    started = time.monotonic()
    with corpus_context() as c:
        yield c
        assert c.evil_server.hits == {}, "a token header made the server fetch from an attacker URL"
        # Two key sources (direct validator, app), each: one fetch + at most one per 30 s cooldown.
        assert c.idp.jwks_fetches <= 2 * (2 + int(time.monotonic() - started) // 30), c.idp.hits


@pytest.fixture(scope="module")
def validator(ctx: Ctx) -> TokenValidator:
    cfg = issuer_settings(ctx)
    return TokenValidator([TrustedIssuer(cfg, RemoteJwks(cfg, cooldown_s=30, max_age_s=3600))], max_token_bytes=8192)


@pytest.fixture(scope="module")
def app(ctx: Ctx, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Services, LiveServer]]:
    settings = make_settings(tmp_path_factory.mktemp("corpus"), auth=AuthSettings(mode="oidc", issuers=[issuer_settings(ctx)]))
    services = build_services(settings)
    with LiveServer(create_app(settings, services)) as server:
        yield services, server
    services.close()


def _whoami(server: LiveServer, token: str) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/whoami", headers={"authorization": f"Bearer {token}".strip().encode("utf-8")}, timeout=10)


def _assert_http_401(resp: httpx.Response) -> None:
    assert resp.status_code == 401, (resp.status_code, resp.text)
    challenge = resp.headers["www-authenticate"]
    assert SAFE_CHALLENGE.fullmatch(challenge), challenge
    assert resp.json()["error"]["code"] in REJECT_CODES


# ------------------------------------------------------------------ tests

def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256"])
def test_genuine_tokens_pass(ctx: Ctx, validator: TokenValidator, app: tuple[Services, LiveServer], alg: str) -> None:
    token = mint(ctx.ec if alg == "ES256" else ctx.rsa, ctx.payload(), alg=alg)
    assert validator.validate(token).claims["sub"] == "alice"
    resp = _whoami(app[1], token)
    assert resp.status_code == 200, resp.text
    assert resp.json()["principals"] == ["group:finance", "tenant:acme", "user:alice"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_forged_token_is_rejected(ctx: Ctx, validator: TokenValidator, app: tuple[Services, LiveServer], name: str) -> None:
    token = CASES[name](ctx)
    with pytest.raises(AuthenticationError):
        ent = app[0].auth.resolver.resolve(validator.validate(token))
        pytest.fail(f"accepted: {ent}")
    _assert_http_401(_whoami(app[1], token))


def test_rejections_never_log_tokens(ctx: Ctx, app: tuple[Services, LiveServer]) -> None:
    """Replays the corpus (and a genuine token) while capturing every server-side log record."""
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if not record.name.startswith(("httpx", "httpcore")):  # the test's own HTTP client
                records.append(f"{record.getMessage()} {getattr(record, 'fields', '')} {record.exc_text or ''}")

    root = logging.getLogger()
    handler, level = Capture(logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        tokens = [CASES[n](ctx) for n in sorted(CASES)] + [ctx.valid()]
        for token in tokens:
            _whoami(app[1], token)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    text = "\n".join(records)
    for token in tokens:
        for part in token.split("."):
            assert len(part) < 24 or part not in text


# ------------------------------------------------------------------ properties

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture(scope="module")
def static_validator(ctx: Ctx) -> TokenValidator:
    return TokenValidator([TrustedIssuer(issuer_settings(ctx), StaticKeys(jwks(ctx.rsa, ctx.ec)))], max_token_bytes=8192)


@pytest.fixture(scope="module")
def genuine(ctx: Ctx, static_validator: TokenValidator) -> dict[str, str]:
    tokens = {"RS256": mint(ctx.rsa, ctx.payload(exp=int(time.time()) + 3600)),
              "ES256": mint(ctx.ec, ctx.payload(exp=int(time.time()) + 3600), alg="ES256")}
    for t in tokens.values():
        static_validator.validate(t)
    return tokens


@hyp_settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), alg=st.sampled_from(["RS256", "ES256"]))
def test_any_single_character_mutation_is_rejected(static_validator: TokenValidator, genuine: dict[str, str],
                                                   data: st.DataObject, alg: str) -> None:
    """Change one character anywhere (header, payload, signature, the dots) to any other one.

    No mutation survives. Signature bytes: a different signature never verifies. Header or
    payload bytes: the signed input changes. Base64url has spare bits in the last character
    of a segment whose length is not a multiple of 4, so a lenient decoder would map two
    strings to the same bytes; joserfc's decoder (used for the signed input and by our own
    header/payload parsing) requires those bits to be zero, so such mutations are refused too.
    """
    token = genuine[alg]
    pos = data.draw(st.integers(0, len(token) - 1), label="position")
    new = data.draw(st.sampled_from(ALPHABET + ".=+/ ~\"\\é\x00").filter(lambda ch: ch != token[pos]), label="char")
    mutated = token[:pos] + new + token[pos + 1:]
    with pytest.raises(AuthenticationError):
        static_validator.validate(mutated)


@hyp_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bit=st.integers(0, 7), data=st.data())
def test_any_single_bit_flip_is_rejected(static_validator: TokenValidator, genuine: dict[str, str],
                                         bit: int, data: st.DataObject) -> None:
    raw = bytearray(genuine["RS256"].encode())
    pos = data.draw(st.integers(0, len(raw) - 1), label="position")
    raw[pos] ^= 1 << bit
    with pytest.raises(AuthenticationError):
        static_validator.validate(raw.decode("latin-1"))


@hyp_settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(age_s=st.integers(31, 10**8), alg=st.sampled_from(["RS384", "RS512", "PS384", "PS512", "ES384", "ES512",
                                                          "EdDSA", "HS256", "HS384", "HS512", "none", ""]))
def test_expired_or_alg_swapped_tokens_are_rejected(ctx: Ctx, static_validator: TokenValidator,
                                                    age_s: int, alg: str) -> None:
    now = int(time.time())
    expired = mint(ctx.rsa, ctx.payload(exp=now - age_s, iat=now - age_s - 60, nbf=DROP))
    with pytest.raises(AuthenticationError):
        static_validator.validate(expired)
    swapped = swap_header(mint(ctx.rsa, ctx.payload()), alg=alg)
    with pytest.raises(AuthenticationError):
        static_validator.validate(swapped)


def test_signature_helper_is_the_real_algorithm(ctx: Ctx) -> None:
    """Guards the corpus: the attacker-side signer produces signatures joserfc itself accepts."""
    from joserfc import jws

    h, p = segment({"alg": "PS256"}), segment({"x": 1})
    sig = signature(ctx.rsa, "PS256", f"{h}.{p}".encode())
    assert jws.deserialize_compact(f"{h}.{p}.{b64(sig)}", ctx.rsa, algorithms=["PS256"]).payload == b'{"x":1}'
