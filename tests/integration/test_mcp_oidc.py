"""Issue 14's acceptance for MCP with real tokens: the SDK's own MCP client over Streamable HTTP,
bearer tokens from the real ``oidc-provider`` on loopback (``testkit/oidc``), the real app.

alice's ``search`` returns only what the ACL manifest lets alice see, bob's identical call only
bob's; a hidden document through ``fetch`` is the same error as a missing one; a deployment
whose audience is another resource refuses the same token with 401 and the
``resource_metadata`` challenge; the metadata document names the IdP as authorization server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from api.app import create_app
from app.services import build_services
from core.settings import AuthSettings
from testkit.oidc.harness import OidcProvider
from tests.api.test_mcp import INIT, MCP_HEADERS, _call
from tests.conftest import LiveServer, make_settings
from tests.integration.test_oidc_provider_e2e import (  # noqa: F401  (module fixtures, re-run here)
    DOCS,
    _allowed,
    _issuer,
    corpus,
    deployment,
    group_map,
    inboxes,
    provider,
)

pytestmark = pytest.mark.slow


def _docs(result: Any) -> set[str]:
    assert not result.is_error, result.content
    return {h["doc_id"] for h in result.structured_content["hits"]}


@pytest.mark.parametrize("client", ["alice", "bob"])
def test_mcp_search_is_scoped_to_the_idp_callers_entitlements(provider: OidcProvider, corpus: Path,  # noqa: F811
                                                              deployment: Any, client: str) -> None:  # noqa: F811
    _, server = deployment
    token = provider.access_token(client, "clearance:search")
    me = httpx.get(f"{server.url}/v1/whoami", headers={"authorization": f"Bearer {token}"}, timeout=10).json()
    expected = _allowed(corpus, set(me["principals"]))
    hidden = sorted(set(DOCS) - expected)[0]
    _, bm25, hybrid, missing, gone = anyio.run(_call, server.url, token, [
        ("search", {"query": "zebra", "top_k": 100, "mode": "bm25"}),
        ("search", {"query": "salary forecast litigation handbook", "top_k": 100}),
        ("fetch", {"id": f"kb/{hidden}"}),
        ("fetch", {"id": "kb/nothing/here.md"}),
    ])
    assert _docs(bm25) == expected
    assert _docs(hybrid) <= expected
    assert missing.is_error and gone.is_error and missing.content[0].text == gone.content[0].text


def test_a_token_for_another_audience_is_refused(provider: OidcProvider, group_map: Path,  # noqa: F811
                                                 tmp_path: Path) -> None:
    issuer = _issuer(provider).model_copy(update={"audience": "https://other.example/mcp"})
    settings = make_settings(tmp_path, auth=AuthSettings(mode="oidc", issuers=[issuer], group_map_path=group_map))
    services = build_services(settings, embedder=__import__("retrieval.embedder", fromlist=["HashEmbedder"]).HashEmbedder(64))
    try:
        with LiveServer(create_app(settings, services)) as server:
            token = provider.access_token("alice", "clearance:search")  # aud: "clearance"
            r = httpx.post(f"{server.url}/mcp", json=INIT, timeout=30,
                           headers={**MCP_HEADERS, "authorization": f"Bearer {token}"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token"
            assert f'resource_metadata="{server.url}/.well-known/oauth-protected-resource/mcp"' in r.headers["www-authenticate"]
            meta = httpx.get(f"{server.url}/.well-known/oauth-protected-resource/mcp", timeout=10).json()
            assert meta["authorization_servers"] == [provider.issuer]
    finally:
        services.close()
