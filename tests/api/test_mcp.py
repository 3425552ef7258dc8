"""The MCP server (issue 14), driven by the official SDK's own client over Streamable HTTP against
the real app behind uvicorn, and over stdio against ``clearance mcp`` in a subprocess.

Dev-issuer tokens (the same validator as production); the real IdP case is in
``tests/integration/test_mcp_oidc.py``. What each caller may see comes from the ACLs pushed here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import ProtectedResourceMetadata

from testkit.oidc.harness import claims, mint
from tests.api.ops_env import HTTP, Env, running
from tests.api.test_search_agents import register

DOCS = {
    "company/handbook.txt": ("Zebra crossing rules in the office handbook.", ["tenant:acme"]),
    "finance/q3.txt": ("Zebra revenue forecast for the third quarter.", ["group:finance"]),
    "hr/bands.txt": ("Zebra salary bands for engineers.", ["group:hr"]),
    "hr/bob-review.txt": ("Zebra performance review notes for bob alone.", ["user:bob"]),
}
VISIBLE = {
    "alice": {"company/handbook.txt", "finance/q3.txt"},
    "bob": {"company/handbook.txt", "hr/bands.txt", "hr/bob-review.txt"},
}
GROUPS = {"alice": ["finance"], "bob": ["hr"]}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with running(tmp_path_factory.mktemp("mcp")) as e:
        register(e, "kb")
        for rel, (text, allow) in DOCS.items():
            e.push("kb", rel, text, allow)
        yield e


def token(env: Env, sub: str) -> str:
    return env.auth(sub, GROUPS.get(sub, []))["authorization"].removeprefix("Bearer ")


async def _call(url: str, bearer: str | None, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as client:
        async with streamable_http_client(f"{url}/mcp", http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                out: list[Any] = [tools]
                for name, args in calls:
                    out.append(await session.call_tool(name, args))
                return out


def call(env: Env, sub: str, *calls: tuple[str, dict[str, Any]]) -> list[Any]:
    return anyio.run(_call, env.url, token(env, sub), list(calls))


def doc_ids(result: Any) -> set[str]:
    assert not result.is_error, result.content
    return {h["doc_id"] for h in result.structured_content["hits"]}


def test_tools_are_listed_with_schemas_for_a_model(env: Env) -> None:
    [tools] = call(env, "alice")
    by_name = {t.name: t for t in tools.tools}
    assert set(by_name) == {"search", "fetch"}
    props = by_name["search"].input_schema["properties"]
    assert {"query", "top_k", "mode", "max_age", "sources", "modified_after", "modified_before", "group_by",
            "cursor"} <= set(props)
    assert "ctx" not in props and by_name["search"].input_schema["required"] == ["query"]
    assert all(by_name[n].description for n in by_name)
    assert "low_confidence" in by_name["search"].output_schema["properties"]


@pytest.mark.parametrize("sub", ["alice", "bob"])
def test_search_returns_only_the_callers_chunks(env: Env, sub: str) -> None:
    args = {"query": "zebra", "top_k": 50, "mode": "bm25"}
    _, res = call(env, sub, ("search", args))
    assert doc_ids(res) == VISIBLE[sub]
    hit = res.structured_content["hits"][0]
    assert {"id", "document_id", "text", "title", "uri", "source", "modified_at", "score"} <= set(hit)
    assert hit["document_id"] == f"kb/{hit['doc_id']}"
    assert res.structured_content["low_confidence"] is None  # bm25: no dense signal
    _, hybrid = call(env, sub, ("search", {"query": "zebra salary forecast", "top_k": 50}))
    assert doc_ids(hybrid) <= VISIBLE[sub] and isinstance(hybrid.structured_content["low_confidence"], bool)


def test_same_answer_as_rest(env: Env) -> None:
    rest = env.search(env.auth("bob", ["hr"]), "zebra", mode="bm25")
    _, res = call(env, "bob", ("search", {"query": "zebra", "top_k": 50, "mode": "bm25"}))
    assert [h["id"] for h in rest.json()["hits"]] == [h["id"] for h in res.structured_content["hits"]]


def test_fetch_reads_a_visible_document_and_hidden_equals_missing(env: Env) -> None:
    _, own, hidden, missing, bad = call(env, "alice", ("fetch", {"id": "kb/finance/q3.txt"}),
                                        ("fetch", {"id": "kb/hr/bands.txt"}), ("fetch", {"id": "kb/hr/nope.txt"}),
                                        ("fetch", {"id": "nodocid"}))
    assert not own.is_error and "revenue forecast" in own.structured_content["text"]
    assert own.structured_content["id"] == "kb/finance/q3.txt" and own.structured_content["source"] == "kb"
    assert hidden.is_error and missing.is_error
    assert hidden.content[0].text == missing.content[0].text
    assert hidden.content[0].text.endswith("not_found: document not found")
    assert bad.is_error and "invalid_request" in bad.content[0].text


def test_grouped_and_paged_search_through_mcp(env: Env) -> None:
    _, grouped = call(env, "bob", ("search", {"query": "zebra", "mode": "bm25", "group_by": "document", "top_k": 2}))
    out = grouped.structured_content
    assert out["hits"] == [] and len(out["documents"]) == 2 and out["next_cursor"]
    first = {d["document_id"] for d in out["documents"]}
    _, more = call(env, "bob", ("search", {"query": "zebra", "mode": "bm25", "group_by": "document", "top_k": 2,
                                           "cursor": out["next_cursor"]}))
    rest = {d["document_id"] for d in more.structured_content["documents"]}
    assert first.isdisjoint(rest) and {i.removeprefix("kb/") for i in first | rest} == VISIBLE["bob"]
    # alice cannot replay bob's cursor
    _, stolen = call(env, "alice", ("search", {"query": "zebra", "mode": "bm25", "group_by": "document", "top_k": 2,
                                               "cursor": out["next_cursor"]}))
    assert stolen.is_error and "invalid_cursor" in stolen.content[0].text


def test_tool_calls_are_audited(env: Env) -> None:
    call(env, "alice", ("search", {"query": "zebra audit probe", "mode": "bm25"}), ("fetch", {"id": "kb/hr/bands.txt"}))
    events = list(env.services.audit.export())
    search = [e for e in events if e["action"] == "search" and e["params"].get("via") == "mcp"]
    assert search and search[-1]["subject"] == "alice" and search[-1]["status"] == 200
    assert search[-1]["request_id"]  # the HTTP request's id, as for REST reads
    assert {c["doc_id"] for c in search[-1]["chunks"]} <= VISIBLE["alice"]
    refused = [e for e in events if e["action"] == "document" and e["params"].get("doc_id") == "hr/bands.txt"]
    assert refused and refused[-1]["status"] == 404 and refused[-1]["chunks"] == []


# -- authorization (RFC 9728, RFC 8707) ----------------------------------------------------------

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def test_no_token_is_a_401_with_the_resource_metadata_challenge(env: Env) -> None:
    r = HTTP.post(f"{env.url}/mcp", json=INIT, headers=MCP_HEADERS)
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_token"
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{env.url}/.well-known/oauth-protected-resource/mcp"' in challenge
    # a REST route keeps its plain challenge
    assert "resource_metadata" not in HTTP.post(f"{env.url}/v1/search", json={"query": "x"}).headers["www-authenticate"]
    # the SDK client sees the refusal too (its transport error, whatever the SDK names it)
    with pytest.raises(Exception):  # noqa: B017
        anyio.run(_call, env.url, None, [])


def test_token_for_another_audience_is_refused(env: Env) -> None:
    dev = env.services.auth.dev
    assert dev is not None
    payload = claims(env.settings.auth.dev_issuer, audience="https://elsewhere.example/mcp", sub="alice",
                     groups=["finance"], scope="clearance:search", tenant="acme")
    other = mint(dev.key, payload, kid=dev.key.kid)
    r = HTTP.post(f"{env.url}/mcp", json=INIT, headers={**MCP_HEADERS, "authorization": f"Bearer {other}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token"
    assert 'error="invalid_token"' in r.headers["www-authenticate"] and "resource_metadata=" in r.headers["www-authenticate"]
    # the same claims for this resource's audience pass
    good = mint(dev.key, {**payload, "aud": env.settings.auth.dev_audience}, kid=dev.key.kid)
    ok = HTTP.post(f"{env.url}/mcp", json=INIT, headers={**MCP_HEADERS, "authorization": f"Bearer {good}"})
    assert ok.status_code == 200, ok.text


def test_token_without_the_search_scope_is_a_403(env: Env) -> None:
    r = HTTP.post(f"{env.url}/mcp", json=INIT, headers={**MCP_HEADERS, **env.auth("alice", scopes=["clearance:ingest"])})
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]


def test_protected_resource_metadata(env: Env) -> None:
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        r = HTTP.get(env.url + path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        doc = r.json()
        meta = ProtectedResourceMetadata.model_validate(doc)  # the SDK's RFC 9728 model
        assert str(meta.resource) == f"{env.url}/mcp"
        assert [str(a).rstrip("/") for a in meta.authorization_servers] == [env.settings.auth.dev_issuer]
        assert doc["scopes_supported"] == ["clearance:search"] and doc["bearer_methods_supported"] == ["header"]


# -- stdio ------------------------------------------------------------------------------------

def test_stdio_server_answers_the_same_tool_calls(env: Env, tmp_path: Path) -> None:
    # A second process cannot open the server's Edge shard: the stdio server gets its own data
    # dir with the same documents, ingested through the CLI first.
    data = tmp_path / "var"
    kb = tmp_path / "kb"
    for rel, (text, _allow) in DOCS.items():
        (kb / rel).parent.mkdir(parents=True, exist_ok=True)
        (kb / rel).write_text(text, "utf-8")
    acl = "\n".join(f'[files."{rel}"]\nallow = {json.dumps(allow)}' for rel, (_, allow) in DOCS.items())
    (kb / "acl.toml").write_text(f'tenant = "acme"\n{acl}\n', "utf-8")
    envvars = {k: v for k, v in os.environ.items() if not k.startswith("CLEARANCE_")}
    envvars.update(CLEARANCE_STORAGE__DATA_DIR=str(data), CLEARANCE_EMBEDDER__KIND="hash")
    import subprocess

    done = subprocess.run([sys.executable, "-m", "cli.main", "ingest", str(kb), "--source", "kb"], env=envvars,
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    minted = subprocess.run([sys.executable, "-m", "cli.main", "token", "--sub", "bob", "--group", "hr"], env=envvars,
                            capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert minted.returncode == 0, minted.stderr[-2000:]

    async def run() -> list[Any]:
        params = StdioServerParameters(command=sys.executable, args=["-m", "cli.main", "mcp"],
                                       env={**envvars, "CLEARANCE_TOKEN": minted.stdout.strip()},
                                       cwd=str(Path(__file__).resolve().parents[2]))
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return [await session.list_tools(),
                        await session.call_tool("search", {"query": "zebra", "top_k": 50, "mode": "bm25"}),
                        await session.call_tool("fetch", {"id": "kb/finance/q3.txt"}),
                        await session.call_tool("fetch", {"id": "kb/finance/missing.txt"}),
                        await session.call_tool("fetch", {"id": "kb/hr/bands.txt"})]

    tools, search, hidden, missing, own = anyio.run(run)
    assert {t.name for t in tools.tools} == {"search", "fetch"}
    assert doc_ids(search) == VISIBLE["bob"]
    assert hidden.is_error and missing.is_error and hidden.content[0].text == missing.content[0].text
    assert not own.is_error and "salary bands" in own.structured_content["text"]


def test_rest_is_unchanged_by_the_mount(env: Env) -> None:
    r = httpx.get(f"{env.url}/openapi.json", timeout=30)
    assert r.status_code == 200 and "/mcp" not in r.json()["paths"]
