"""The leak duel's read paths for agents (issue 14), against the same oracle:

- ``search_paged``: a bm25 query whose oracle answer is known exactly, walked page by page with
  ``next_cursor`` (small ``top_k``): no hit outside the caller's entitlements, no chunk twice
  across pages, and the pages together hold every entitled match;
- ``search_grouped``: the same walk with ``group_by: "document"``: also no document twice;
- ``mcp_search`` / ``mcp_fetch``: the MCP tools over Streamable HTTP with the SDK's own client
  (same token): search hits within the entitlements and holding every match that fits; fetch of
  a visible document returns its chunks' text, of a hidden one the same error as a missing one;
  callers refused by REST are refused on ``/mcp`` (401/403 before the MCP layer).

Every answer that hands out chunks is recorded like the REST reads (``Duel._handed``), so the
audit check at the end also covers these paths.
"""

from __future__ import annotations

from typing import Any

import anyio

from battery.duel_corpus import Doc, Duel, PathStats, Principal

AGENT_PATHS = ("search_paged", "search_grouped", "mcp_search", "mcp_fetch")
PAGE = 25
PER_DOC = 20
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "duel", "version": "1"}}}


def _stats(duel: Duel, path: str) -> PathStats:
    return duel.stats.setdefault(path, PathStats())


def paged(duel: Duel, p: Principal, query: str, allowed: dict[str, Doc], must: set[str], *,
          group_by: str = "chunk") -> None:
    path = "search_grouped" if group_by == "document" else "search_paged"
    st = _stats(duel, path)
    got: list[str] = []
    docs_seen: list[tuple[str, str]] = []
    cursor: str | None = None
    what = f"bm25 {query[:40]!r} paged {group_by}"
    for _ in range(200):
        body: dict[str, Any] = {"query": query, "top_k": PAGE, "mode": "bm25", "group_by": group_by,
                                "chunks_per_document": PER_DOC}
        if cursor:
            body["cursor"] = cursor
        r = duel.env.http.post("/v1/search", json=body, headers=duel.env.headers(p))
        st.requests += 1
        if r.status_code != 200:
            duel._bad(path, "errors", 1, f"{p.label()} {what}: status {r.status_code} {r.text[:200]}")
            return
        data = r.json()
        if group_by == "document":
            ids = [h["id"] for d in data["documents"] for h in d["hits"]]
            docs_seen += [(d["source"], d["doc_id"]) for d in data["documents"]]
        else:
            ids = [h["id"] for h in data["hits"]]
        got += ids
        duel._handed(p, [allowed[i].key for i in ids if i in allowed])
        cursor = data.get("next_cursor")
        if not cursor:
            break
    else:
        duel._bad(path, "errors", 1, f"{p.label()} {what}: no end after 200 pages")
    st.items += len(got)
    leaked = [i for i in got if i not in allowed]
    if leaked:
        duel._bad(path, "leaks", len(leaked), f"{p.label()} {what}: not entitled {leaked[:3]}")
    if len(set(got)) != len(got):
        duel._bad(path, "errors", len(got) - len(set(got)), f"{p.label()} {what}: a chunk repeated across pages")
    if len(set(docs_seen)) != len(docs_seen):
        duel._bad(path, "errors", 1, f"{p.label()} {what}: a document repeated across pages")
    per_doc: dict[str, int] = {}
    for cid in must:
        per_doc[allowed[cid].key] = per_doc.get(allowed[cid].key, 0) + 1
    # grouped answers keep PER_DOC chunks per document: only those documents are checked whole
    expected = {cid for cid in must if group_by == "chunk" or per_doc[allowed[cid].key] <= PER_DOC}
    missed = expected - set(got)
    if missed:
        duel._bad(path, "misses", len(missed), f"{p.label()} {what}: entitled but absent {sorted(missed)[:3]}")


async def _mcp(url: str, token: str, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=120) as client:
        async with streamable_http_client(f"{url}/mcp", http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return [await session.call_tool(name, args) for name, args in calls]


def mcp(duel: Duel, p: Principal, query: str, allowed: dict[str, Doc], must: set[str],
        reads: list[tuple[Doc, Doc | None]]) -> None:
    """``reads``: (document asked for, what the caller must get: the document, or None = not found)."""
    search, fetch = _stats(duel, "mcp_search"), _stats(duel, "mcp_fetch")
    headers = duel.env.headers(p)
    if not p.can_search:
        r = duel.env.http.post("/mcp", json=INIT, headers={**headers, "accept": "application/json, text/event-stream"})
        duel._refused("mcp_search", p, r, "mcp initialize", 403 if p.authenticated else 401)
        return
    token = headers["authorization"].removeprefix("Bearer ")
    calls = [("search", {"query": query, "top_k": 100, "mode": "bm25"})]
    calls += [("fetch", {"id": f"{d.source}/{d.doc_id}"}) for d, _ in reads]
    calls += [("fetch", {"id": "nosuchsource/nosuchdoc"})]
    try:
        results = anyio.run(_mcp, duel.env.server.url, token, calls)
    except Exception as exc:  # the transport itself failed
        duel._bad("mcp_search", "errors", 1, f"{p.label()} mcp: {type(exc).__name__}: {exc}"[:300])
        return
    res, *fetched, missing = results
    what = f"mcp search {query[:40]!r}"
    search.requests += 1
    if res.is_error:
        duel._bad("mcp_search", "errors", 1, f"{p.label()} {what}: {res.content[0].text[:200]}")
    else:
        ids = [h["id"] for h in res.structured_content["hits"]]
        search.items += len(ids)
        duel._handed(p, [allowed[i].key for i in ids if i in allowed])
        leaked = [i for i in ids if i not in allowed]
        if leaked:
            duel._bad("mcp_search", "leaks", len(leaked), f"{p.label()} {what}: not entitled {leaked[:3]}")
        if len(must) <= 100 and must - set(ids):
            duel._bad("mcp_search", "misses", len(must - set(ids)), f"{p.label()} {what}: entitled but absent")
    not_found = missing.content[0].text if missing.is_error else None
    for (asked, expected), out in zip(reads, fetched):
        fetch.requests += 1
        label = f"{p.label()} mcp fetch {asked.source}/{asked.doc_id}"
        if expected is None:
            if not out.is_error:
                duel._bad("mcp_fetch", "leaks", 1, f"{label}: hidden document returned")
            elif out.content[0].text != not_found:
                duel._bad("mcp_fetch", "errors", 1, f"{label}: hidden differs from missing: {out.content[0].text[:120]}")
            continue
        if out.is_error:
            duel._bad("mcp_fetch", "misses", 1, f"{label}: visible document refused: {out.content[0].text[:120]}")
            continue
        fetch.items += 1
        duel._handed(p, [expected.key])
        body = out.structured_content
        if (body["source"], body["doc_id"]) != (expected.source, expected.doc_id):
            duel._bad("mcp_fetch", "errors", 1, f"{label}: answered {body['source']}/{body['doc_id']}")
