"""One principal grammar everywhere (manifests, push, token mapping), RFC 9068 access tokens
(``iat`` required, the dev issuer's ``typ: at+jwt``), the manifest's strict reading, and
``/readyz`` naming tenants no issuer can assert."""

from __future__ import annotations

from pathlib import Path

import pytest

from auth.authenticator import Authenticator, build_authenticator
from auth.dev_issuer import DevIssuer
from auth.keys import StaticKeys
from auth.principals import ClaimsResolver
from auth.validator import TokenValidator, TrustedIssuer
from core.errors import AuthenticationError
from core.settings import AuthSettings, IssuerSettings
from core.types import Acl, check_principal, principal_problem
from ingest.manifest import AclManifest, ManifestError
from ingest.sources import FilesystemSource
from testkit.oidc.harness import DROP, claims, jwks, mint, rsa_key
from tests.api.ops_env import HTTP, running

GOOD = ["user:alice", "user:ns/alice@example.com", "group:finance", "group:Finance Team", "role:clearance:ingest",
        "tenant:acme", "group:" + "x" * 256, "group:é"]
BAD = ["group:fin\u0000", "group:*", "group:fin*", "user:a:b", "group:a:b", "tenant:a:b", "Group:finance",
       "USER:alice", "group: finance", "group:finance ", "group:\tx", "finance", "group:", ":x", "", "group:a\nb",
       "group:" + "x" * 257, "group:a\u200b", "robot:x"]


@pytest.mark.parametrize("p", GOOD)
def test_principals_in_the_grammar(p: str) -> None:
    assert principal_problem(p) is None and check_principal(p) == p


@pytest.mark.parametrize("p", BAD)
def test_principals_outside_the_grammar(p: str) -> None:
    assert principal_problem(p) is not None
    with pytest.raises(ValueError):
        Acl(frozenset({p}))


KEY = rsa_key("k-1")
ISS = "https://idp.example"


def _auth(**cfg: object) -> Authenticator:
    issuer = IssuerSettings(issuer=ISS, tenant="acme", **cfg)  # type: ignore[arg-type]
    return Authenticator(TokenValidator([TrustedIssuer(issuer, StaticKeys(jwks(KEY)))], max_token_bytes=16384),
                         ClaimsResolver())


def test_token_mapping_uses_the_grammar() -> None:
    auth = _auth()
    ent = auth.authenticate("Bearer " + mint(KEY, claims(ISS, groups=["finance", "fin*", "a:b", " pad", "ok\u0000"],
                                                        roles=["clearance:ingest", "r*"])))
    assert ent.principals == {"user:alice", "tenant:acme", "group:finance", "role:clearance:ingest"}
    for sub in ("a:b", "x*"):
        with pytest.raises(AuthenticationError):
            auth.authenticate("Bearer " + mint(KEY, claims(ISS, sub=sub)))


def test_access_tokens_need_iat() -> None:
    auth = _auth()
    assert auth.authenticate("Bearer " + mint(KEY, claims(ISS))).subject == "alice"
    with pytest.raises(AuthenticationError):
        auth.authenticate("Bearer " + mint(KEY, claims(ISS, iat=DROP)))


def test_dev_issuer_mints_and_requires_at_jwt(tmp_path: Path) -> None:
    settings = AuthSettings()
    auth = build_authenticator(settings, tmp_path / "key.pem")
    dev = DevIssuer(settings, tmp_path / "key.pem")
    assert dev.issuer_settings.require_at_jwt
    assert auth.authenticate("Bearer " + dev.mint("alice")).subject == "alice"
    forged_typ = mint(dev.key, claims(settings.dev_issuer, sub="alice"), typ="JWT")
    with pytest.raises(AuthenticationError):
        auth.authenticate("Bearer " + forged_typ)
    with pytest.raises(AuthenticationError):
        auth.authenticate("Bearer " + mint(dev.key, claims(settings.dev_issuer, sub="alice"), typ=None))


def test_manifest_problems_are_all_listed_with_the_nearest_path(tmp_path: Path) -> None:
    (tmp_path / "hr").mkdir()
    (tmp_path / "hr" / "secret.md").write_text("secret")
    (tmp_path / "acl.toml").write_text(
        'tenant = "acme"\nflders = 1\n[folders."hr"]\nallow = ["group:hr", "group:hr*"]\n'
        '[files."hr/secrte.md"]\nallow = ["user:bob"]\n[files."../etc/passwd"]\nallow = ["tenant:acme"]\n'
        '[folders."hr/"]\ndeny = []\n')
    manifest, problems = AclManifest.parse(tmp_path)
    assert any("'flders'" in p and "did you mean 'folders'" in p for p in problems)
    assert any("group:hr*" in p for p in problems) and any("../etc/passwd" in p for p in problems)
    assert any("listed twice" in p for p in problems)
    assert manifest.problems(["hr/secret.md"], ["hr"], "acme") == [
        "[files.\"hr/secrte.md\"] matches no file; nearest existing path: 'hr/secret.md'"]
    assert manifest.problems(["hr/secret.md"], ["hr"], "globex")[0].startswith("tenant 'acme' is not")
    with pytest.raises(ManifestError) as exc:
        FilesystemSource(tmp_path, "hr", tenant="acme")
    assert len(exc.value.problems) == 5 and exc.value.status == 422


def test_readyz_names_tenants_no_issuer_can_assert(tmp_path: Path) -> None:
    """Reproduction: a tenant mismatch answered empty searches while /readyz said ready."""
    from testkit.sources import register_source

    with running(tmp_path) as env:
        register_source(env.services, "erp")
        env.push("erp", "q3", "Quarterly revenue forecast.", ["tenant:acme"])
        assert HTTP.get(f"{env.url}/readyz").json()["status"] == "ready"
    with running(tmp_path, auth=AuthSettings(dev_tenant="default")) as env:  # same data, issuer says "default"
        body = HTTP.get(f"{env.url}/readyz").json()
        assert body["status"] == "degraded" and not body["checks"]["tenants"]["ok"]
        assert body["checks"]["tenants"]["stored"] == ["acme"] and body["checks"]["tenants"]["assertable"] == ["default"]
        assert any("tenant(s) acme" in w and "nobody can read them" in w for w in body["warnings"])
