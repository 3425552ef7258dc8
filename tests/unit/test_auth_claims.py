"""Claims → principals, through the whole authenticator: real signed tokens, real validation.

Every test signs a token shaped like a given IdP's (Keycloak, Cognito, Entra ID, Auth0, Okta),
passes it through ``Authenticator.authenticate`` (validator + resolver) and checks the exact
principals. Issuers use static keys here; remote key handling is in test_auth_jwks.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from auth.authenticator import ADMIN, INGEST, SEARCH, Authenticator, build_authenticator
from auth.group_map import GroupMap
from auth.keys import StaticKeys
from auth.principals import ClaimsResolver
from auth.validator import TokenValidator, TrustedIssuer, ValidatedToken
from core.errors import AuthenticationError, ConfigError, PermissionDeniedError
from core.settings import AuthSettings, IssuerSettings
from core.types import Entitlements
from testkit.oidc.harness import DROP, claims, jwks, mint, rsa_key

KEY_A, KEY_B = rsa_key("a-1"), rsa_key("b-1")
ISS_A, ISS_B = "https://idp-a.example/realms/corp", "https://idp-b.example"


def _auth(*issuers: IssuerSettings, group_map: GroupMap | None = None, directory: Any = None) -> Authenticator:
    keys = {ISS_A: KEY_A, ISS_B: KEY_B}
    trusted = [TrustedIssuer(i, StaticKeys(jwks(keys[i.issuer]))) for i in issuers]
    return Authenticator(TokenValidator(trusted, max_token_bytes=16384), ClaimsResolver(group_map, directory))


def _login(auth: Authenticator, iss: str, **extra: Any) -> Entitlements:
    key = KEY_A if iss == ISS_A else KEY_B
    return auth.authenticate("Bearer " + mint(key, claims(iss, **extra)))


def _cfg(iss: str = ISS_A, **extra: Any) -> IssuerSettings:
    return IssuerSettings(issuer=iss, tenant="acme", **extra)


# ------------------------------------------------------------------ claim paths per IdP

def test_keycloak_realm_roles_as_groups_and_client_roles_as_roles() -> None:
    auth = _auth(_cfg(groups_claim="realm_access.roles", roles_claim="resource_access.clearance.roles"))
    ent = _login(auth, ISS_A, sub="f3b1-uuid", groups=DROP, scope=DROP,
                 realm_access={"roles": ["finance", "offline_access"]},
                 resource_access={"clearance": {"roles": ["clearance:ingest"]}, "other-app": {"roles": ["boss"]}})
    assert ent.principals == {"user:f3b1-uuid", "tenant:acme", "group:finance", "group:offline_access",
                              "role:clearance:ingest"}
    Authenticator.require(ent, INGEST)  # a role named like the scope grants it
    with pytest.raises(PermissionDeniedError):
        Authenticator.require(ent, SEARCH)


def test_cognito_groups_claim_with_colon_and_no_typ() -> None:
    auth = _auth(_cfg(groups_claim="cognito:groups", user_claim="username", audience="7lh2k5"))
    token = mint(KEY_A, claims(ISS_A, aud="7lh2k5", groups=DROP, username="bob", sub="9d2c-uuid",
                               token_use="access", **{"cognito:groups": ["hr", "managers"]}), typ=None)
    ent = auth.authenticate(f"Bearer {token}")
    assert ent.subject == "bob"
    assert ent.principals == {"user:bob", "tenant:acme", "group:hr", "group:managers"}


def test_auth0_url_namespaced_claims_and_okta_scp_list() -> None:
    auth = _auth(_cfg(groups_claim="https://clearance.example/groups", scope_claim="scp"))
    ent = _login(auth, ISS_A, groups=DROP, scope=DROP, scp=["clearance:search", "openid"],
                 **{"https://clearance.example/groups": ["legal"]})
    assert ent.principals == {"user:alice", "tenant:acme", "group:legal"}
    assert ent.scopes == {"clearance:search", "openid"}


def test_space_separated_scope_string_but_group_strings_are_never_split() -> None:
    auth = _auth(_cfg())
    ent = _login(auth, ISS_A, scope="clearance:search  clearance:ingest", groups="Domain Admins")
    assert ent.scopes == {"clearance:search", "clearance:ingest"}
    assert "group:Domain Admins" in ent.principals
    assert "group:Admins" not in ent.principals and "group:Domain" not in ent.principals


def test_unusable_group_and_role_values_are_ignored() -> None:
    auth = _auth(_cfg())
    ent = _login(auth, ISS_A, groups=["finance", "", " hr", "legal\n", 7, None, {"g": 1}, "x" * 300, "ok\x00"],
                 roles=["reader", ["nested"], "\tadmin"])
    assert ent.principals == {"user:alice", "tenant:acme", "group:finance", "role:reader"}


# ------------------------------------------------------------------ identity

def test_two_issuers_same_sub_are_different_users() -> None:
    auth = _auth(_cfg(ISS_A, user_namespace="corp"), _cfg(ISS_B, user_namespace="partner"))
    a = _login(auth, ISS_A, sub="alice", groups=[])
    b = _login(auth, ISS_B, sub="alice", groups=[])
    assert "user:corp/alice" in a.principals and "user:partner/alice" in b.principals
    assert a.principals.isdisjoint({p for p in b.principals if p.startswith("user:")})
    assert (a.issuer, b.issuer) == (ISS_A, ISS_B)


def test_token_from_one_issuer_signed_by_the_other_is_refused() -> None:
    auth = _auth(_cfg(ISS_A, user_namespace="corp"), _cfg(ISS_B, user_namespace="partner"))
    with pytest.raises(AuthenticationError):
        auth.authenticate("Bearer " + mint(KEY_B, claims(ISS_A), kid="a-1"))


@pytest.mark.parametrize("namespaces", [("", ""), ("corp", ""), ("corp", "corp")])
def test_several_issuers_need_distinct_namespaces(tmp_path: Path, namespaces: tuple[str, str]) -> None:
    settings = AuthSettings(mode="oidc", issuers=[_cfg(ISS_A, user_namespace=namespaces[0]),
                                                  _cfg(ISS_B, user_namespace=namespaces[1])])
    with pytest.raises(ConfigError):
        build_authenticator(settings, tmp_path / "unused.pem")


def test_namespace_cannot_contain_a_slash() -> None:
    with pytest.raises(ValueError):
        _cfg(user_namespace="corp/eu")


def test_service_account_from_client_credentials() -> None:
    auth = _auth(_cfg(user_namespace="corp"))
    bot = _login(auth, ISS_A, sub="ingest-bot", client_id="ingest-bot", groups=[], scope="clearance:ingest")
    assert bot.principals == {"user:corp/ingest-bot", "role:service", "tenant:acme"}
    Authenticator.require(bot, INGEST)
    with pytest.raises(PermissionDeniedError):
        Authenticator.require(bot, SEARCH)
    user = _login(auth, ISS_A, sub="alice", client_id="portal-app", groups=[])
    assert "role:service" not in user.principals


def test_verified_email_becomes_a_user_principal_only_when_configured() -> None:
    plain = _auth(_cfg())
    assert _login(plain, ISS_A, email="Alice@Acme.com", email_verified=True).principals == {
        "user:alice", "tenant:acme", "group:finance"}
    auth = _auth(_cfg(email_claim="email"))
    assert "user:alice@acme.com" in _login(auth, ISS_A, email="Alice@Acme.com", email_verified=True).principals
    unverified = _login(auth, ISS_A, email="ceo@acme.com", email_verified="true")
    assert not any("@" in p for p in unverified.principals)


def test_tenant_claim_only_within_the_issuers_tenants() -> None:
    auth = _auth(_cfg(tenants=["acme-eu"]))
    assert _login(auth, ISS_A).tenant == "acme"
    assert _login(auth, ISS_A, tenant="acme-eu").principals >= {"tenant:acme-eu"}
    with pytest.raises(AuthenticationError) as err:
        _login(auth, ISS_A, tenant="globex")
    assert err.value.code == "tenant_not_allowed"


def test_admin_scope_implies_the_others() -> None:
    ent = _login(_auth(_cfg()), ISS_A, scope=ADMIN)
    for scope in (SEARCH, INGEST, ADMIN):
        Authenticator.require(ent, scope)
    with pytest.raises(PermissionDeniedError):
        Authenticator.require(_login(_auth(_cfg()), ISS_A, scope=SEARCH), ADMIN)


# ------------------------------------------------------------------ group map file

def _write_map(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "groups.json"
    path.write_text(json.dumps(data), "utf-8")
    return path


def test_group_map_file_through_build_authenticator(tmp_path: Path) -> None:
    path = _write_map(tmp_path, {
        "groups": {"0b5c-finance-guid": "finance", "7aa1-exec-guid": ["exec", "leadership"]},
        "issuers": {ISS_A: {"0b5c-finance-guid": "finance-emea"}},
    })
    settings = AuthSettings(mode="oidc", group_map_path=path,
                            issuers=[_cfg(ISS_A, user_namespace="a"), _cfg(ISS_B, user_namespace="b")])
    built = build_authenticator(settings, tmp_path / "unused.pem")
    auth = _auth(_cfg(ISS_A, user_namespace="a"), _cfg(ISS_B, user_namespace="b"), group_map=built.resolver.group_map)
    a = _login(auth, ISS_A, groups=["0b5c-finance-guid", "7aa1-exec-guid", "plain"])
    b = _login(auth, ISS_B, groups=["0b5c-finance-guid"])
    assert {p for p in a.principals if p.startswith("group:")} == {
        "group:finance-emea", "group:exec", "group:leadership", "group:plain"}
    assert {p for p in b.principals if p.startswith("group:")} == {"group:finance"}


def test_group_map_can_drop_unmapped_groups() -> None:
    gm = GroupMap.parse({"unmapped": "drop", "groups": {"g-1": "finance"}})
    ent = _login(_auth(_cfg(), group_map=gm), ISS_A, groups=["g-1", "finance", "hr"])
    assert {p for p in ent.principals if p.startswith("group:")} == {"group:finance"}


@pytest.mark.parametrize("data", [[], {"groups": ["a"]}, {"groups": {"a": 1}}, {"groups": {"a": " padded"}},
                                  {"unmapped": "maybe"}, {"issuers": []}, {"extra": {}}])
def test_malformed_group_map_is_a_config_error(tmp_path: Path, data: Any) -> None:
    with pytest.raises(ConfigError):
        build_authenticator(AuthSettings(group_map_path=_write_map(tmp_path, data)), tmp_path / "k.pem")


def test_unreadable_group_map_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "groups.json").write_text("{not json", "utf-8")
    with pytest.raises(ConfigError):
        build_authenticator(AuthSettings(group_map_path=tmp_path / "groups.json"), tmp_path / "k.pem")
    with pytest.raises(ConfigError):
        build_authenticator(AuthSettings(group_map_path=tmp_path / "missing.json"), tmp_path / "k.pem")


# ------------------------------------------------------------------ group overage

ENTRA_OVERAGE = {"_claim_names": {"groups": "src1"},
                 "_claim_sources": {"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/u/getMemberObjects"}}}


@pytest.mark.parametrize("extra", [
    {"groups": DROP, **ENTRA_OVERAGE},
    {"groups": DROP, "hasgroups": True},
    {"groups": [f"g{i}" for i in range(6)]},
])
def test_overage_is_refused_by_default(extra: dict[str, Any]) -> None:
    auth = _auth(_cfg(max_groups=5))
    with pytest.raises(AuthenticationError) as err:
        _login(auth, ISS_A, **extra)
    assert err.value.code == "group_overage" and err.value.status == 401


def test_max_groups_is_inclusive() -> None:
    ent = _login(_auth(_cfg(max_groups=5)), ISS_A, groups=[f"g{i}" for i in range(5)])
    assert len([p for p in ent.principals if p.startswith("group:")]) == 5


def test_overage_with_drop_groups_resolves_without_any_group() -> None:
    auth = _auth(_cfg(group_overage="drop_groups"))
    ent = _login(auth, ISS_A, groups=DROP, **ENTRA_OVERAGE)
    assert ent.principals == {"user:alice", "tenant:acme"}


def test_overage_with_a_directory_looks_groups_up() -> None:
    class Directory:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def groups_for(self, token: ValidatedToken) -> Sequence[str]:
            self.asked.append(token.claims["sub"])
            return ["0b5c-finance-guid", "hr"]

    directory = Directory()
    gm = GroupMap.parse({"groups": {"0b5c-finance-guid": "finance"}})
    ent = _login(_auth(_cfg(), group_map=gm, directory=directory), ISS_A, groups=DROP, **ENTRA_OVERAGE)
    assert directory.asked == ["alice"]
    assert {p for p in ent.principals if p.startswith("group:")} == {"group:finance", "group:hr"}


# ------------------------------------------------------------------ token types

def test_id_tokens_only_when_configured() -> None:
    id_token = {"nonce": "abc", "at_hash": "x", "aud": "clearance"}
    with pytest.raises(AuthenticationError):
        _login(_auth(_cfg()), ISS_A, **id_token)
    assert _login(_auth(_cfg(accept_id_tokens=True)), ISS_A, **id_token).subject == "alice"


@pytest.mark.parametrize("typ, strict, ok", [
    ("at+jwt", True, True), ("application/at+jwt", True, True), ("JWT", True, False), (None, True, False),
    ("JWT", False, True), (None, False, True), ("application/jwt", False, True), ("dpop+jwt", False, False),
])
def test_typ_header(typ: str | None, strict: bool, ok: bool) -> None:
    auth = _auth(_cfg(require_at_jwt=strict))
    token = mint(KEY_A, claims(ISS_A), typ=typ)
    if ok:
        assert auth.authenticate(f"Bearer {token}").subject == "alice"
    else:
        with pytest.raises(AuthenticationError):
            auth.authenticate(f"Bearer {token}")


def test_leeway_applies_to_exp_nbf_and_iat() -> None:
    import time

    now = int(time.time())
    auth = _auth(_cfg(leeway_s=60))
    assert _login(auth, ISS_A, exp=now - 30, nbf=now + 30, iat=now + 30).subject == "alice"
    with pytest.raises(AuthenticationError):
        _login(auth, ISS_A, exp=now - 90)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic YWxpY2U6cHc=", "Bearer a b", "Token abc"])
def test_malformed_authorization_headers(header: str | None) -> None:
    with pytest.raises(AuthenticationError) as err:
        _auth(_cfg()).authenticate(header)
    assert err.value.code in {"missing_token", "invalid_token"}


def test_symmetric_algorithms_cannot_be_configured() -> None:
    for algs in (["HS256"], ["none"], [], ["RS256", "HS512"]):
        with pytest.raises(ValueError):
            IssuerSettings(issuer=ISS_A, algorithms=algs)


def test_dev_issuer_tokens_go_through_the_same_validator(tmp_path: Path) -> None:
    auth = build_authenticator(AuthSettings(mode="dev"), tmp_path / "dev-key.pem")
    assert auth.dev is not None
    ent = auth.authenticate("Bearer " + auth.dev.mint("alice", groups=["finance"], roles=["auditor"],
                                                      scopes=[SEARCH, INGEST]))
    assert ent.principals == {"user:alice", "group:finance", "role:auditor", "tenant:acme"}
    assert ent.scopes == {SEARCH, INGEST}
    with pytest.raises(AuthenticationError):
        auth.authenticate("Bearer " + auth.dev.mint("alice", ttl_s=-3600))
    with pytest.raises(AuthenticationError) as err:
        auth.authenticate("Bearer " + auth.dev.mint("alice", tenant="globex"))
    assert err.value.code == "tenant_not_allowed"
