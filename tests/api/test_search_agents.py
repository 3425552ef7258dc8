"""The search API shaped for agents (issue 14), over real HTTP: ``group_by: "document"``, page
cursors bound to the caller and the query, metadata filters on declared fields (pushed with
metadata through the push API, stored typed, filtered inside the engine)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from core.settings import IngestSettings, SourceContract
from tests.api.ops_env import HTTP, INGEST, Env, running

CONTRACTS = {"crm": SourceContract(types={"region": "str", "amount": "int", "closed": "bool", "signed": "date"})}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with running(tmp_path_factory.mktemp("agents"), ingest=IngestSettings(contracts=CONTRACTS)) as e:
        register(e, "kb")
        register(e, "crm")
        # one long spreadsheet-like document that would fill a plain top 8 on its own
        e.push("kb", "hr/bands.txt", "\n\n".join(f"Salary bands table row {i}: " + "salary band " * 80 for i in range(12)),
               ["group:hr"])
        for name in ("policy", "faq", "memo", "guide"):
            e.push("kb", f"hr/{name}.txt", f"Salary bands {name} for engineers.", ["group:hr"])
        e.push("kb", "fin/secret.txt", "Salary bands of the board, finance only.", ["group:finance"])
        for doc, region, amount, closed in (("d1", "emea", 500, True), ("d2", "emea", 5, False), ("d3", "apac", 50, True),
                                            ("d4", "emea", 900, True)):
            signed = {"d1": "2024-01-15", "d2": "2024-03-01T12:00:00+00:00", "d3": "2025-02-01", "d4": "2024-02-01"}[doc]
            r = HTTP.put(f"{e.url}/v1/sources/crm/documents/{doc}", headers=e.auth("etl", scopes=[INGEST]),
                         json={"filename": f"{doc}.txt", "content": f"Zebra deal {doc} notes.",
                               "acl": {"allow": ["tenant:acme"] if doc != "d4" else ["group:finance"]},
                               "metadata": {"region": region, "amount": amount, "closed": closed, "signed": signed}})
            assert r.status_code == 200, r.text
        yield e


def register(env: Env, name: str) -> None:
    """Sources are registered by an admin before anything is pushed to them."""
    r = HTTP.post(f"{env.url}/v1/admin/sources", headers=env.auth("root", scopes=["clearance:admin"]),
                  json={"name": name, "kind": "push", "writers": ["user:etl"]})
    assert r.status_code == 201, r.text


def bob(env: Env) -> dict[str, str]:
    return env.auth("bob", ["hr"])


def search(env: Env, headers: dict[str, str], **body: Any) -> Any:
    return HTTP.post(f"{env.url}/v1/search", json={"mode": "bm25", **body}, headers=headers)


def test_group_by_document_top_k_counts_documents(env: Env) -> None:
    plain = search(env, bob(env), query="salary bands", top_k=8).json()
    assert len({h["provenance"]["doc_id"] for h in plain["hits"]}) < 5  # the spreadsheet crowds the list
    r = search(env, bob(env), query="salary bands", top_k=5, group_by="document", chunks_per_document=2)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["hits"] == [] and len(body["documents"]) == 5
    ids = [d["doc_id"] for d in body["documents"]]
    assert len(set(ids)) == 5 and "fin/secret.txt" not in ids
    assert all(1 <= len(d["hits"]) <= 2 for d in body["documents"])
    assert [d["score"] for d in body["documents"]] == sorted((d["score"] for d in body["documents"]), reverse=True)


@pytest.mark.parametrize("group_by", ["chunk", "document"])
def test_pages_cover_everything_once(env: Env, group_by: str) -> None:
    seen: list[str] = []
    cursor, pages = None, 0
    while True:
        body = search(env, bob(env), query="salary bands", top_k=3, group_by=group_by, chunks_per_document=20,
                      **({"cursor": cursor} if cursor else {})).json()
        chunks = [h["id"] for h in body["hits"]] + [h["id"] for d in body["documents"] or [] for h in d["hits"]]
        seen += chunks
        cursor, pages = body["next_cursor"], pages + 1
        if not cursor:
            break
        assert pages < 30
    everything = search(env, bob(env), query="salary bands", top_k=100).json()["hits"]
    assert len(seen) == len(set(seen)) and set(seen) == {h["id"] for h in everything}


def test_cursor_is_bound_to_the_caller_and_the_query(env: Env) -> None:
    first = search(env, bob(env), query="salary bands", top_k=2).json()
    cursor = first["next_cursor"]
    assert cursor
    ok = search(env, bob(env), query="salary bands", top_k=2, cursor=cursor)
    assert ok.status_code == 200 and not {h["id"] for h in ok.json()["hits"]} & {h["id"] for h in first["hits"]}
    cases = [
        (env.auth("alice", ["hr", "finance"]), {"query": "salary bands"}),  # another principal set
        (env.auth("bob", ["hr", "finance"]), {"query": "salary bands"}),  # same subject, wider groups
        (bob(env), {"query": "salary"}),  # another query
        (bob(env), {"query": "salary bands", "sources": ["kb"]}),  # other filters
        (bob(env), {"query": "salary bands", "group_by": "document"}),
        (bob(env), {"query": "salary bands", "cursor_tamper": True}),
    ]
    for headers, body in cases:
        c = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB") if body.pop("cursor_tamper", False) else cursor
        r = search(env, headers, top_k=2, cursor=c, **body)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_cursor", (body, r.text)


def test_metadata_filters_on_declared_fields(env: Env) -> None:
    alice = env.auth("alice", ["finance"])

    def docs(headers: dict[str, str], metadata: dict[str, Any]) -> set[str]:
        r = search(env, headers, query="zebra deal", top_k=50, metadata=metadata)
        assert r.status_code == 200, r.text
        return {h["provenance"]["doc_id"] for h in r.json()["hits"]}

    assert docs(bob(env), {"region": "emea"}) == {"d1", "d2"}  # d4 is emea but finance-only
    assert docs(alice, {"region": "emea"}) == {"d1", "d2", "d4"}
    assert docs(bob(env), {"amount": {"gte": 10}}) == {"d1", "d3"}
    assert docs(bob(env), {"region": ["emea", "apac"], "closed": True}) == {"d1", "d3"}
    assert docs(bob(env), {"amount": [5, 50]}) == {"d2", "d3"}
    assert docs(bob(env), {"signed": {"gte": "2024-01-01", "lt": "2025-01-01"}}) == {"d1", "d2"}
    assert docs(alice, {"signed": {"gte": "2024-02-01T00:00:00Z"}}) == {"d2", "d3", "d4"}
    for bad in ({"owner": "x"}, {"region": {"gte": 1}}, {"amount": "many"}, {"region": {"gt": 1}},
                {"signed": {"gte": "yesterday"}}, {"signed": {"gte": 5}}, {"signed": "2024-01-15"},
                {"amount": {"gte": "2024-01-01"}}):
        r = search(env, bob(env), query="zebra deal", metadata=bad)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", (bad, r.text)
