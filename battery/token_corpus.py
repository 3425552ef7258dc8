"""The forged-token corpus: access tokens an attacker could build, every one of which must be
refused (401), and the loopback identity provider they are built against.

Shared by ``tests/unit/test_auth_token_corpus.py`` (every case, directly and over HTTP) and
``battery/tokens.py`` (the corpus at scale through the live app, repeated with fresh keys).

The issuer is real enough: its discovery document and JWKS (an RSA key ``rsa-1`` without an
``alg`` member and an EC P-256 key ``ec-1``) are served over loopback HTTP
(``testkit.oidc.harness.JwksServer``) and fetched by the production ``RemoteJwks``; an attacker's
JWKS server runs beside it and must never be contacted. Each corpus entry is built the way an
attacker would build it: header and payload under full control, signatures made with real keys
(the attacker's, or the issuer's over a payload the attacker cannot otherwise use), HMAC over
the issuer's public key material for key confusion. Every :func:`corpus_context` makes fresh keys.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from joserfc import jwe
from joserfc.jwk import OKPKey, RSAKey

from core.settings import IssuerSettings
from testkit.oidc.harness import DROP, JwksServer, b64, claims, compact, ec_key, jwks, mint, rsa_key, segment

# What every refusal must look like over HTTP (the description is a fixed phrase, never token text).
SAFE_CHALLENGE = re.compile(r'^Bearer realm="clearance", error="invalid_token", error_description="[A-Za-z0-9 .,:;()/_-]*"$')
REJECT_CODES = {"invalid_token", "group_overage", "tenant_not_allowed"}
GENUINE_ALGS = ("RS256", "PS256", "ES256")


@dataclass
class Ctx:
    iss: str
    rsa: RSAKey
    ec: Any
    evil_rsa_same_kid: RSAKey
    evil_rsa: RSAKey
    evil_ec_same_kid: Any
    evil_p384: Any
    evil_okp: OKPKey
    evil_server: JwksServer
    x5c: list[str]
    idp: JwksServer

    def payload(self, **extra: Any) -> dict[str, Any]:
        return claims(self.iss, **extra)

    def signed(self, **extra: Any) -> str:
        """Correctly signed by the issuer's RSA key; claims from ``extra``."""
        return mint(self.rsa, self.payload(**extra))

    def valid(self) -> str:
        return self.signed()


CASES: dict[str, Callable[[Ctx], str]] = {}


def case(name: str) -> Callable[[Callable[[Ctx], str]], Callable[[Ctx], str]]:
    def deco(fn: Callable[[Ctx], str]) -> Callable[[Ctx], str]:
        assert name not in CASES
        CASES[name] = fn
        return fn
    return deco


def swap_header(token: str, **changes: Any) -> str:
    """Keep payload and signature, rewrite the header (the classic alg-swap forgery)."""
    h, p, s = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))
    header.update(changes)
    return f"{segment({k: v for k, v in header.items() if v is not DROP})}.{p}.{s}"


def _hmac(ctx: Ctx, alg: str, secret: bytes, kid: str | None = "rsa-1") -> str:
    header = {"alg": alg, "typ": "at+jwt", **({"kid": kid} if kid else {})}
    h, p = segment(header), segment(ctx.payload())
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return f"{h}.{p}.{b64(hmac.new(secret, f'{h}.{p}'.encode(), digest).digest())}"


def _raw_payload(ctx: Ctx, text: str, key: Any = None, alg: str = "RS256", kid: str = "rsa-1") -> str:
    """A token whose payload bytes are exactly ``text`` (for JSON the encoder would not write)."""
    header = {"alg": alg, "typ": "at+jwt", "kid": kid}
    return compact(header, text.encode(), key or ctx.rsa, alg)


# ------------------------------------------------------------------ structure and encoding

case("empty")(lambda c: "")
case("one-segment garbage")(lambda c: "not-a-jwt")
case("two segments")(lambda c: ".".join(c.valid().split(".")[:2]))
case("four segments")(lambda c: c.valid() + ".AAAA")
case("trailing dot")(lambda c: c.valid() + ".")
case("JWE compact (5 parts)")(lambda c: jwe.encrypt_compact(
    {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "rsa-1"}, json.dumps(c.payload()).encode(), c.rsa,
    algorithms=["RSA-OAEP-256", "A256GCM"]))
case("truncated")(lambda c: c.valid()[:-10])
case("signature stripped (empty third segment)")(lambda c: c.valid().rsplit(".", 1)[0] + ".")
case("bad base64 character")(lambda c: c.valid().replace(".", ".!", 1))
case("base64 padding characters")(lambda c: c.valid().split(".")[0] + "==." + ".".join(c.valid().split(".")[1:]))
case("standard base64 alphabet (+ and /)")(lambda c: (lambda p: f"{p[0]}.{p[1][:10]}+/{p[1][12:]}.{p[2]}")(c.valid().split(".")))
case("non-canonical padding bits in signature")(lambda c: (lambda t: t[:-1] + chr(ord(t[-1]) + 1))(c.valid()))
case("space inside the token")(lambda c: (lambda t: t[:40] + " " + t[40:])(c.valid()))
case("non-ASCII character")(lambda c: (lambda t: t[:40] + "é" + t[41:])(c.valid()))
case("header is not JSON")(lambda c: f"{b64(b'not json')}.{c.valid().split('.', 1)[1]}")
case("header is a JSON array")(lambda c: f"{segment(['RS256'])}.{c.valid().split('.', 1)[1]}")
case("header is not UTF-8")(lambda c: f"{b64(bytes([0xff, 0xfe, 0x7b]))}.{c.valid().split('.', 1)[1]}")
case("payload is a JSON array (signed)")(lambda c: _raw_payload(c, json.dumps([c.payload()])))
case("payload is a JSON string (signed)")(lambda c: _raw_payload(c, '"alice"'))
case("payload is not JSON (signed)")(lambda c: _raw_payload(c, "sub=alice&aud=clearance"))
case("payload with duplicate iss (signed)")(lambda c: _raw_payload(
    c, json.dumps(c.payload())[:-1] + ', "iss": "https://evil.example"}'))
DUPLICATE_ALG = b64(b'{"alg":"none","alg":"RS256","kid":"rsa-1"}')
case("duplicate alg in header")(lambda c: f"{DUPLICATE_ALG}.{c.valid().split('.', 1)[1]}")
case("NaN expiry (signed)")(lambda c: _raw_payload(c, json.dumps(c.payload(exp=DROP))[:-1] + ', "exp": NaN}'))
case("infinite expiry 1e400 (signed)")(lambda c: _raw_payload(c, json.dumps(c.payload(exp=DROP))[:-1] + ', "exp": 1e400}'))
case("oversized token (signed)")(lambda c: c.signed(pad="x" * 9000))
case("oversized header (signed)")(lambda c: mint(c.rsa, c.payload(), x_pad="y" * 3500))
case("oversized garbage")(lambda c: "A" * 20000)

# ------------------------------------------------------------------ algorithm

case("alg none, no signature")(lambda c: compact({"alg": "none", "typ": "at+jwt"}, c.payload()))
case("alg None (casing)")(lambda c: compact({"alg": "None", "typ": "at+jwt"}, c.payload()))
case("alg NONE with kid")(lambda c: compact({"alg": "NONE", "typ": "at+jwt", "kid": "rsa-1"}, c.payload()))
case("alg none keeping the real signature")(lambda c: swap_header(c.valid(), alg="none"))
case("alg missing")(lambda c: swap_header(c.valid(), alg=DROP))
case("alg null")(lambda c: swap_header(c.valid(), alg=None))
case("alg as a list")(lambda c: swap_header(c.valid(), alg=["RS256"]))
case("alg unknown RS1")(lambda c: swap_header(c.valid(), alg="RS1"))
case("HS256 keyed with the RSA public key PEM")(lambda c: _hmac(c, "HS256", c.rsa.as_pem(private=False)))
case("HS256 keyed with the RSA JWK JSON")(lambda c: _hmac(c, "HS256", json.dumps(c.rsa.as_dict(private=False)).encode()))
case("HS256 keyed with the RSA modulus bytes")(lambda c: _hmac(
    c, "HS256", (lambda n: base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)))(c.rsa.as_dict()["n"])))
case("HS384 keyed with the RSA public key PEM")(lambda c: _hmac(c, "HS384", c.rsa.as_pem(private=False)))
case("HS512 keyed with the RSA public key PEM")(lambda c: _hmac(c, "HS512", c.rsa.as_pem(private=False)))
case("HS256 keyed with the EC public key PEM")(lambda c: _hmac(c, "HS256", c.ec.as_pem(private=False), kid="ec-1"))
case("HS256 without kid keyed with PEM")(lambda c: _hmac(c, "HS256", c.rsa.as_pem(private=False), kid=None))
case("alg swap RS256 to PS256")(lambda c: swap_header(c.valid(), alg="PS256"))
case("alg swap RS256 to RS512 (not allowed)")(lambda c: swap_header(c.valid(), alg="RS512"))
case("alg swap RS256 to ES256")(lambda c: swap_header(c.valid(), alg="ES256"))
case("alg swap PS256 to RS256")(lambda c: swap_header(mint(c.rsa, c.payload(), alg="PS256"), alg="RS256"))
case("ES256 signed on the wrong curve (P-384)")(lambda c: compact(
    {"alg": "ES256", "typ": "at+jwt", "kid": "ec-1"}, c.payload(), c.evil_p384, "ES384"))
case("ES256 by another P-256 key with the same kid")(lambda c: mint(c.evil_ec_same_kid, c.payload(), alg="ES256"))
case("ES256 naming the RSA kid")(lambda c: mint(c.ec, c.payload(), alg="ES256", kid="rsa-1"))
case("RS256 naming the EC kid")(lambda c: mint(c.rsa, c.payload(), kid="ec-1"))
case("EdDSA (not allowed) by an attacker key")(lambda c: mint(c.evil_okp, c.payload(), alg="EdDSA"))

# ------------------------------------------------------------------ key selection

case("unknown kid")(lambda c: mint(c.evil_rsa, c.payload(), kid="kid-that-does-not-exist"))
case("kid path traversal")(lambda c: mint(c.evil_rsa, c.payload(), kid="../../../../dev/null"))
case("kid SQL injection")(lambda c: mint(c.evil_rsa, c.payload(), kid="x' UNION SELECT 'secret' --"))
case("kid command injection")(lambda c: mint(c.evil_rsa, c.payload(), kid="rsa-1|/usr/bin/id"))
case("kid with quotes and CRLF")(lambda c: mint(c.evil_rsa, c.payload(), kid='a"\r\nSet-Cookie: x=1'))
case("kid is an integer")(lambda c: mint(c.rsa, c.payload(), kid=1))
case("kid is empty")(lambda c: mint(c.rsa, c.payload(), kid=""))
case("kid is an object")(lambda c: mint(c.rsa, c.payload(), kid={"$ne": ""}))
case("kid very long")(lambda c: mint(c.evil_rsa, c.payload(), kid="k" * 2000))
case("no kid while the issuer has several keys")(lambda c: mint(c.rsa, c.payload(), kid=DROP))
case("kid null while the issuer has several keys")(lambda c: compact(
    {"alg": "RS256", "typ": "at+jwt", "kid": None}, c.payload(), c.rsa))
case("another key with the same kid")(lambda c: mint(c.evil_rsa_same_kid, c.payload()))
case("embedded jwk header with the attacker key")(lambda c: mint(
    c.evil_rsa, c.payload(), jwk=c.evil_rsa.as_dict(private=False)))
case("embedded jwk header naming the issuer kid")(lambda c: mint(
    c.evil_rsa, c.payload(), kid="rsa-1", jwk={**c.evil_rsa.as_dict(private=False), "kid": "rsa-1"}))
case("jku pointing at the attacker JWKS")(lambda c: mint(c.evil_rsa, c.payload(), jku=c.evil_server.issuer + "/jwks"))
case("jku pointing at the attacker JWKS with the issuer kid")(lambda c: mint(
    c.evil_rsa_same_kid, c.payload(), jku=c.evil_server.issuer + "/jwks"))
case("x5u pointing elsewhere")(lambda c: mint(c.evil_rsa, c.payload(), x5u=c.evil_server.issuer + "/cert.pem"))
case("x5c with an attacker certificate")(lambda c: mint(c.evil_rsa, c.payload(), kid="rsa-1", x5c=c.x5c))

# ------------------------------------------------------------------ header parameters

case("crit naming an unknown extension")(lambda c: mint(c.rsa, c.payload(), crit=["exp"], exp=1))
case("crit empty list")(lambda c: mint(c.rsa, c.payload(), crit=[]))
case("crit b64 with unencoded payload")(lambda c: mint(c.rsa, c.payload(), crit=["b64"], b64=False))
case("b64 false without crit")(lambda c: mint(c.rsa, c.payload(), b64=False))
case("typ dpop+jwt")(lambda c: mint(c.rsa, c.payload(), typ="dpop+jwt"))
case("typ logout+jwt")(lambda c: mint(c.rsa, c.payload(), typ="logout+jwt"))
case("typ JOSE")(lambda c: mint(c.rsa, c.payload(), typ="JOSE"))
case("typ is a number")(lambda c: mint(c.rsa, c.payload(), typ=1))  # type: ignore[arg-type]

# ------------------------------------------------------------------ claims (validly signed)

case("unknown issuer")(lambda c: c.signed(iss="https://evil.example"))
case("iss missing")(lambda c: c.signed(iss=DROP))
case("iss with trailing slash")(lambda c: c.signed(iss=c.iss + "/"))
case("iss in other case")(lambda c: c.signed(iss=c.iss.upper()))
case("iss as a list")(lambda c: c.signed(iss=[c.iss]))
case("aud of another API")(lambda c: c.signed(aud="https://other-api.example"))
case("aud missing")(lambda c: c.signed(aud=DROP))
case("aud list without ours")(lambda c: c.signed(aud=["a", "b"]))
case("aud empty")(lambda c: c.signed(aud=""))
case("aud a number")(lambda c: c.signed(aud=7))
case("expired beyond leeway")(lambda c: c.signed(exp=int(time.time()) - 120, iat=int(time.time()) - 600))
case("exp missing")(lambda c: c.signed(exp=DROP))
case("exp as a string")(lambda c: c.signed(exp="9999999999"))
case("exp as a boolean")(lambda c: c.signed(exp=True))
case("nbf in the future")(lambda c: c.signed(nbf=int(time.time()) + 3600))
case("nbf as a string")(lambda c: c.signed(nbf="now"))
case("iat in the future")(lambda c: c.signed(iat=int(time.time()) + 3600))
case("sub missing")(lambda c: c.signed(sub=DROP))
case("sub empty")(lambda c: c.signed(sub=""))
case("sub a number")(lambda c: c.signed(sub=42))
case("sub with leading space")(lambda c: c.signed(sub=" alice"))
case("sub with a newline")(lambda c: c.signed(sub="alice\nadmin"))
case("ID token with nonce")(lambda c: c.signed(nonce="n-0S6_WzA2Mj"))
case("ID token with at_hash, typ JWT")(lambda c: mint(c.rsa, c.payload(at_hash="77QmUPtjPfzWtF2AnpK9RQ"), typ="JWT"))
case("Keycloak ID token (typ ID claim)")(lambda c: mint(c.rsa, c.payload(typ="ID"), typ="JWT"))
case("Cognito ID token (token_use id)")(lambda c: mint(c.rsa, c.payload(token_use="id"), typ=None))
case("tenant the issuer may not assert")(lambda c: c.signed(tenant="globex"))
case("group overage via _claim_names")(lambda c: c.signed(
    groups=DROP, _claim_names={"groups": "src1"},
    _claim_sources={"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/x/getMemberObjects"}}))
case("group overage via hasgroups")(lambda c: c.signed(groups=DROP, hasgroups=True))
case("more groups than max_groups")(lambda c: c.signed(groups=[f"g{i}" for i in range(21)]))



# ------------------------------------------------------------------ the issuer and its context

def issuer_settings(ctx: Ctx) -> IssuerSettings:
    """How the app trusts the corpus issuer (``max_groups`` 20: the overage case sends 21)."""
    return IssuerSettings(issuer=ctx.iss, audience="clearance", algorithms=list(GENUINE_ALGS),
                          tenant="acme", max_groups=20)


def genuine(ctx: Ctx, alg: str) -> str:
    """A token the issuer really issued (the control: it must be accepted)."""
    return mint(ctx.ec if alg == "ES256" else ctx.rsa, ctx.payload(), alg=alg)


@contextmanager
def corpus_context(*, cache_control: str | None = "max-age=300") -> Iterator[Ctx]:
    """Fresh issuer keys, the issuer's JWKS server and the attacker's, for as long as it is open."""
    rsa, ec = rsa_key("rsa-1"), ec_key("ec-1")
    evil = rsa_key("evil-1")
    cert_key = evil.private_key
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(cert_key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(cert_key, hashes.SHA256()))
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    with JwksServer(jwks(rsa, ec), cache_control=cache_control) as idp, \
            JwksServer(jwks(evil, rsa_key("rsa-1"))) as evil_server:
        yield Ctx(iss=idp.issuer, rsa=rsa, ec=ec, evil_rsa_same_kid=rsa_key("rsa-1"), evil_rsa=evil,
                  evil_ec_same_kid=ec_key("ec-1"), evil_p384=ec_key("ec-1", "P-384"),
                  evil_okp=OKPKey.generate_key("Ed25519", parameters={"kid": "okp-1"}), evil_server=evil_server,
                  x5c=x5c, idp=idp)
