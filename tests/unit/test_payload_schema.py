"""The chunk payload has one owner (``retrieval.payload``). Invariants:

- no module outside it spells a payload field as a string literal where a payload is read or
  written (a subscript or ``.get`` on a payload, a payload dict literal, an ACL field anywhere),
  so renaming a field in the schema cannot leave a reader or the filter behind;
- what the writer stores reads back as the same ``ChunkPayload``, and the fields the scope
  filter names are fields the writer stores.
"""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

from core.types import Acl
from retrieval.payload import (
    FLOAT_FIELDS,
    KEYWORD_FIELDS,
    SAMPLE_STEPS,
    ChunkPayload,
    PayloadField,
    acl_of,
    doc_key,
    sample_key,
)
from retrieval.scope_filter import Match, Range, compile_scope
from tests.conftest import REPO

FIELDS = {f.value for f in PayloadField}
# Names that mean nothing but a payload field: never legitimate as literals elsewhere.
DISTINCT = {PayloadField.ACL_ALLOW.value, PayloadField.ACL_DENY.value, PayloadField.DOC_KEY.value,
            PayloadField.MODIFIED_TS.value}
PACKAGES = ("core", "store", "auth", "retrieval", "ingest", "app", "api", "cli", "eval", "bench", "battery", "testkit",
            "tests")
OWNER = REPO / "retrieval" / "payload.py"


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _mentions_payload(node: ast.AST) -> bool:
    return "payload" in ast.unparse(node).lower()


def spelled_fields(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Subscript) and _mentions_payload(node.value):
            if (key := _literal(node.slice)) in FIELDS:
                found.append(f"{where} payload[{key!r}]")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            if node.func.attr == "get" and _mentions_payload(node.func.value) and (key := _literal(node.args[0])) in FIELDS:
                found.append(f"{where} payload.get({key!r})")
        elif isinstance(node, ast.keyword) and node.arg == "payload" and isinstance(node.value, ast.Dict):
            found += [f"{where} payload={{{k!r}: …}}" for k in map(_literal, node.value.keys) if k in FIELDS]
        elif (value := _literal(node)) in DISTINCT and path != OWNER and path.name != Path(__file__).name:
            found.append(f"{where} {value!r}")
    return found


def test_no_module_spells_a_payload_field() -> None:
    # Migrations spell the catalog's SQL columns (``documents.acl_allow``): a table, not the payload.
    offenders = [hit for pkg in PACKAGES for path in sorted((REPO / pkg).rglob("*.py"))
                 if "node_modules" not in path.parts and "migrations" not in path.parts and path != OWNER
                 for hit in spelled_fields(path)]
    assert offenders == []


def test_the_scanner_finds_a_hand_built_payload(tmp_path: Path) -> None:
    # The check above must be able to fail: the patterns it looks for are caught.
    probe = REPO / "tests" / "unit" / "_payload_probe.py"
    probe.write_text('p = {}\nx = hit.payload["text"]\ny = h.payload.get("source")\nz = "acl_deny"\n'
                     'IndexPoint("id", [], None, payload={"tenant": "t"})\n', encoding="utf-8")
    try:
        found = spelled_fields(probe)
    finally:
        probe.unlink()
    assert len(found) == 4


def test_written_payload_reads_back_and_the_filter_names_stored_fields() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    p = ChunkPayload(tenant="acme", source="wiki", doc_id="a/b.md", uri="u", title="T", section="S", page=2,
                     element_types=("Title",), chunk_index=3, version="v", content_hash="h", modified_at=now,
                     ingested_at=now, acl=Acl(frozenset({"group:x"}), frozenset({"user:y"})), text="body",
                     metadata={"team": "a"})
    stored = p.to_index()
    assert ChunkPayload.from_index(stored) == p
    assert acl_of(stored) == p.acl
    assert stored[PayloadField.DOC_KEY] == doc_key("acme", "wiki", "a/b.md") == p.doc_key
    assert {f.value for f in (*KEYWORD_FIELDS, *FLOAT_FIELDS)} <= set(stored)
    from core.types import Entitlements, Scope

    flt = compile_scope(Scope(Entitlements("s", "i", "acme", frozenset({"group:x"})), max_age_s=60), now=now)
    named = {c.key.value for c in flt.must} | {c.key.value for g in flt.must_not for c in g}
    assert named <= set(stored)
    assert all(isinstance(c, (Match, Range)) for c in flt.must)


def test_sample_key_is_a_fixed_uniform_place_independent_of_content_and_acl() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)

    def stored(text: str, allow: str) -> dict[str, object]:
        return ChunkPayload(tenant="acme", source="wiki", doc_id="d", uri="u", title="T", section="", page=None,
                            element_types=(), chunk_index=4, version="v", content_hash="h", modified_at=now,
                            ingested_at=now, acl=Acl(frozenset({allow})), text=text).to_index()

    a, b = stored("one text", "group:x"), stored("another text", "group:y")
    assert a[PayloadField.SAMPLE_KEY] == b[PayloadField.SAMPLE_KEY] == sample_key("acme/wiki/d", 4)
    keys = [sample_key(f"acme/s/doc{i // 3}", i % 3) for i in range(32_768)]
    assert all(0.0 <= k < 1.0 and (k * SAMPLE_STEPS).is_integer() for k in keys)
    # uniform: each eighth of [0, 1) holds 1/8 of the keys within 5 % (expected deviation ~1.6 %)
    counts = [sum(1 for k in keys if j / 8 <= k < (j + 1) / 8) for j in range(8)]
    assert all(abs(c - 4096) < 0.05 * 4096 for c in counts), counts
    assert len(set(keys)) == SAMPLE_STEPS
