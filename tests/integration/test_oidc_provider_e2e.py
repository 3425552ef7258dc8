"""Issue 5's acceptance: a real OpenID Provider, the real app, real HTTP on both sides.

The IdP is the npm ``oidc-provider`` (certified OP) from ``testkit/oidc`` running under node on a
loopback port: discovery, JWKS and the token endpoint are its own. Callers get JWT access
tokens from it with the client-credentials grant (so every caller here is a client whose
``sub`` is its client id: alice, bob and erin stand in for users, ``ingest-bot`` is a service
account). Clearance is configured only with the issuer URL: it discovers the JWKS itself.

The corpus is generated into a temp folder with an ``acl.toml`` and ingested with the hash
embedder; what each caller may see is computed from the manifest (an oracle independent of
ranking) and compared with what the API returns.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from api.app import create_app
from app.services import Services, build_services
from core.settings import AuthSettings, IngestSettings, IssuerSettings
from ingest.manifest import AclManifest
from ingest.sources import FilesystemSource
from testkit.oidc.harness import NodeUnavailable, OidcProvider
from testkit.sources import register_source
from tests.conftest import LiveServer, make_settings

pytestmark = pytest.mark.slow

HR_GUID = "5f1e7a2c-41d8-4c3e-9a51-hr000000001"
CLIENTS: list[dict[str, Any]] = [
    {"client_id": "alice", "client_secret": "alice-secret-6f2b91d0c4", "scope": "clearance:search",
     "groups": ["finance"]},
    {"client_id": "bob", "client_secret": "bob-secret-0d7e5a3b19", "scope": "clearance:search",
     "groups": [HR_GUID]},  # an IdP group id, mapped to "hr" by the group map file
    {"client_id": "erin", "client_secret": "erin-secret-9a4c2e7f01", "scope": "clearance:search", "groups": []},
    {"client_id": "ingest-bot", "client_secret": "bot-secret-3c8d1f6e52", "scope": "clearance:ingest",
     "groups": []},
]

DOCS = {
    "company/handbook.md": "# Handbook\n\nZebra crossing rules and the office handbook for every employee.\n",
    "finance/q3-forecast.md": "# Q3 forecast\n\nZebra revenue forecast: EBITDA margin guidance for Q3.\n",
    "finance/budget.txt": "Zebra budget lines for travel and hotels, finance only.\n",
    "hr/salary-bands.md": "# Salary bands\n\nZebra salary bands for L4 engineers.\n",
    "hr/bob-review.txt": "Zebra performance review notes, for bob alone.\n",
    "hr/ops-notes.md": "# HR ops\n\nZebra HR operations notes that bob is denied.\n",
    "legal/contract.md": "# Contract\n\nZebra litigation hold on the Northwind contract.\n",
}
ACL = """
tenant = "acme"
[folders."company"]
allow = ["tenant:acme"]
[folders."finance"]
allow = ["group:finance"]
[folders."hr"]
allow = ["group:hr"]
[folders."legal"]
allow = ["group:legal"]
[files."hr/bob-review.txt"]
allow = ["user:corp/bob"]
[files."hr/ops-notes.md"]
deny = ["user:corp/bob"]
"""


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    op = OidcProvider(tmp_path_factory.mktemp("idp"), CLIENTS)
    try:
        op.start()
    except NodeUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kb")
    for rel, text in DOCS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, "utf-8")
    (root / "acl.toml").write_text(ACL, "utf-8")
    return root


def _issuer(op: OidcProvider) -> IssuerSettings:
    return IssuerSettings(issuer=op.issuer, audience="clearance", algorithms=["RS256"], tenant="acme",
                          user_namespace="corp", require_at_jwt=True)


@pytest.fixture(scope="module")
def group_map(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("map") / "groups.json"
    path.write_text(json.dumps({"groups": {HR_GUID: "hr"}}), "utf-8")
    return path


@pytest.fixture(scope="module")
def inboxes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one folder the server may read for folder jobs (ingest.allowed_roots)."""
    return tmp_path_factory.mktemp("inboxes")


@pytest.fixture(scope="module")
def deployment(provider: OidcProvider, corpus: Path, group_map: Path, inboxes: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Services, LiveServer]]:
    auth = AuthSettings(mode="oidc", issuers=[_issuer(provider)], jwks_cooldown_s=1.0, group_map_path=group_map)
    settings = make_settings(tmp_path_factory.mktemp("clearance"), auth=auth,
                             ingest=IngestSettings(allowed_roots=[inboxes]))
    services = build_services(settings)
    report = services.ingestor.sync(FilesystemSource(corpus, "kb"))
    assert report.errors == [] and report.counts == {"added": len(DOCS)}
    with LiveServer(create_app(settings, services)) as server:
        yield services, server
    services.close()


def _h(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _search(server: LiveServer, token: str, query: str = "zebra", mode: str = "bm25") -> httpx.Response:
    return httpx.post(f"{server.url}/v1/search", json={"query": query, "top_k": 100, "mode": mode},
                      headers=_h(token), timeout=30)


def _allowed(corpus: Path, principals: set[str]) -> set[str]:
    manifest = AclManifest.load(corpus)
    return {rel for rel in DOCS if manifest.acl_for(rel).visible_to(frozenset(principals))}


def _jose_header(token: str) -> dict[str, Any]:
    h = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))  # type: ignore[no-any-return]


# ------------------------------------------------------------------ tests

def test_provider_issues_rfc9068_jwt_access_tokens(provider: OidcProvider) -> None:
    token = provider.access_token("alice", "clearance:search")
    header = _jose_header(token)
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256"
    kids = {k["kid"] for k in httpx.get(f"{provider.issuer}/jwks", timeout=10).json()["keys"]}
    assert header["kid"] in kids
    denied = provider.token("alice", "clearance:ingest")  # the IdP itself enforces client scopes
    assert denied.status_code == 400 and denied.json()["error"] == "invalid_scope"


@pytest.mark.parametrize("client, expected", [
    ("alice", {"company/handbook.md", "finance/q3-forecast.md", "finance/budget.txt"}),
    ("bob", {"company/handbook.md", "hr/salary-bands.md", "hr/bob-review.txt"}),
    ("erin", {"company/handbook.md"}),
])
def test_each_caller_sees_exactly_what_its_groups_allow(provider: OidcProvider, corpus: Path,
                                                        deployment: tuple[Services, LiveServer],
                                                        client: str, expected: set[str]) -> None:
    _, server = deployment
    token = provider.access_token(client, "clearance:search")
    me = httpx.get(f"{server.url}/v1/whoami", headers=_h(token), timeout=10).json()
    assert _allowed(corpus, set(me["principals"])) == expected  # the oracle agrees with the table
    resp = _search(server, token)
    assert resp.status_code == 200, resp.text
    assert {h["provenance"]["doc_id"] for h in resp.json()["hits"]} == expected
    for mode in ("hybrid", "dense"):
        hits = _search(server, token, "salary forecast litigation handbook", mode).json()["hits"]
        assert {h["provenance"]["doc_id"] for h in hits} <= expected
    count = httpx.get(f"{server.url}/v1/chunks/count", headers=_h(token), timeout=10).json()["visible_chunks"]
    assert count == len(expected)  # one chunk per small document


def test_whoami_shows_principals_from_the_idp(provider: OidcProvider, deployment: tuple[Services, LiveServer]) -> None:
    _, server = deployment
    alice = httpx.get(f"{server.url}/v1/whoami", headers=_h(provider.access_token("alice", "clearance:search")),
                      timeout=10).json()
    assert alice == {"subject": "corp/alice", "issuer": provider.issuer, "tenant": "acme",
                     "principals": ["group:finance", "role:service", "tenant:acme", "user:corp/alice"],
                     "scopes": ["clearance:search"]}
    bob = httpx.get(f"{server.url}/v1/whoami", headers=_h(provider.access_token("bob", "clearance:search")),
                    timeout=10).json()
    assert bob["principals"] == ["group:hr", "role:service", "tenant:acme", "user:corp/bob"]  # HR_GUID mapped


def test_ingest_needs_the_ingest_scope(provider: OidcProvider, inboxes: Path,
                                       deployment: tuple[Services, LiveServer]) -> None:
    services, server = deployment
    inbox = inboxes / "inbox"
    # a filesystem source its connector (the ingest-bot service account) may write
    register_source(services, "inbox", kind="filesystem", root=inbox, writers=["user:corp/ingest-bot"])
    (inbox / "finance").mkdir(parents=True)
    (inbox / "finance" / "memo.md").write_text("# Memo\n\nQuokka acquisition memo for finance.\n", "utf-8")
    (inbox / "acl.toml").write_text('[folders."finance"]\nallow = ["group:finance"]\n', "utf-8")
    job = {"path": str(inbox), "source": "inbox"}

    alice = provider.access_token("alice", "clearance:search")
    refused = httpx.post(f"{server.url}/v1/ingest/jobs", json=job, headers=_h(alice), timeout=30)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]

    bot = provider.access_token("ingest-bot", "clearance:ingest")
    assert _search(server, bot).status_code == 403  # the service account cannot read
    done = httpx.post(f"{server.url}/v1/ingest/jobs", json=job, headers=_h(bot), timeout=120)
    assert done.status_code == 200, done.text
    assert done.json()["counts"] == {"added": 1} and done.json()["errors"] == []

    assert {h["provenance"]["doc_id"] for h in _search(server, alice, "quokka").json()["hits"]} == {"finance/memo.md"}
    bob = provider.access_token("bob", "clearance:search")
    assert _search(server, bob, "quokka").json()["hits"] == []


def test_tampered_and_foreign_tokens_are_401(provider: OidcProvider, deployment: tuple[Services, LiveServer]) -> None:
    _, server = deployment
    token = provider.access_token("erin", "clearance:search")
    h, p, s = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    payload["groups"] = ["finance", "hr", "legal"]
    forged_payload = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    for bad in (f"{h}.{forged_payload}.{s}", token[:-4], f"{h}.{p}."):
        resp = _search(server, bad)
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"].startswith('Bearer realm="clearance", error="invalid_token"')


def test_cli_whoami_in_oidc_mode(provider: OidcProvider, group_map: Path, tmp_path: Path) -> None:
    from cli.main import app

    env = {"CLEARANCE_AUTH__MODE": "oidc",
           "CLEARANCE_AUTH__ISSUERS": json.dumps([_issuer(provider).model_dump(mode="json")]),
           "CLEARANCE_AUTH__GROUP_MAP_PATH": str(group_map),
           "CLEARANCE_STORAGE__DATA_DIR": str(tmp_path / "var")}
    runner = CliRunner()
    token = provider.access_token("bob", "clearance:search")
    result = runner.invoke(app, ["whoami", "--token", token, "--json"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["subject"] == "corp/bob" and data["issuer"] == provider.issuer
    assert data["principals"] == ["group:hr", "role:service", "tenant:acme", "user:corp/bob"]

    bad = runner.invoke(app, ["whoami", "--token", token[:-6], "--json"], env=env)
    assert bad.exit_code == 2
    assert "error [invalid_token]" in bad.output and token[:-6] not in bad.output


def test_key_rotation_at_the_idp_is_picked_up_without_restart(provider: OidcProvider,
                                                              deployment: tuple[Services, LiveServer]) -> None:
    """Runs last: rotates the provider's signing key (the old key stays published)."""
    services, server = deployment
    keys = services.auth.validator.key_source(provider.issuer)
    old_token = provider.access_token("alice", "clearance:search")
    assert httpx.get(f"{server.url}/v1/whoami", headers=_h(old_token), timeout=10).status_code == 200
    before = keys.fetches  # type: ignore[union-attr]

    rotated = provider.rotate()
    new_token = provider.access_token("alice", "clearance:search")
    assert _jose_header(new_token)["kid"] == rotated["kid"] != _jose_header(old_token)["kid"]
    time.sleep(1.1)  # let the 1 s refetch cooldown (30 s by default) pass since the last fetch

    first = httpx.get(f"{server.url}/v1/whoami", headers=_h(new_token), timeout=10)
    assert first.status_code == 200, first.text
    assert keys.fetches == before + 1  # type: ignore[union-attr]  # exactly one refetch
    for token in (new_token, new_token, old_token):
        assert httpx.get(f"{server.url}/v1/whoami", headers=_h(token), timeout=10).status_code == 200
    assert _search(server, new_token).status_code == 200
    assert keys.fetches == before + 1  # type: ignore[union-attr]
