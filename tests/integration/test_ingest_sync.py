"""Filesystem sync through the real pipeline, catalog (SQLite) and Edge index: idempotent,
incremental, deletes propagate, ACL-only changes never embed, bad files fail alone, and a
kill -9 at a random point recovers with no lost, duplicated or orphaned chunk."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path

import pytest

from app.services import Services, build_services
from core.types import Entitlements, Scope
from ingest.sources import FilesystemSource
from retrieval.payload import acl_of
from store.catalog import Catalog
from tests.api.test_push import CountingEmbedder
from tests.conftest import REPO, make_settings


def write_tree(root: Path, n: int = 6) -> None:
    (root / "fin").mkdir(parents=True, exist_ok=True)
    (root / "all").mkdir(exist_ok=True)
    (root / "acl.toml").write_text('[folders."fin"]\nallow = ["group:finance"]\n[folders."all"]\nallow = ["tenant:acme"]\n')
    for i in range(n):
        (root / "fin" / f"f{i}.md").write_text(f"# Forecast {i}\n\nRevenue forecast number {i} for the quarter.\n")
        (root / "all" / f"a{i}.txt").write_text(f"Company announcement {i}: revenue grew.\n")


def check_consistent(services: Services) -> None:
    """Catalog and index agree exactly: every catalog id is in the index, nothing else is."""
    rows = list(services.catalog.documents())
    catalog_ids = [pid for r in rows for pid in r.ids]
    assert len(catalog_ids) == len(set(catalog_ids)), "duplicated chunk ids"
    assert all(r.state == "indexed" for r in rows)
    assert services.index.size() == len(catalog_ids), "orphaned or lost chunks"
    found = {h.id for h in services.index.retrieve(catalog_ids)}
    assert found == set(catalog_ids)
    for r in rows:  # the ACL in the index is the catalog's
        for h in services.index.retrieve(r.ids):
            assert acl_of(h.payload) == r.acl


def visible(services: Services, *principals: str) -> set[str]:
    scope = Scope(Entitlements("x", "i", "acme", frozenset(principals)))
    return {h.provenance["doc_id"] for h in services.search_unaudited.search(scope, "revenue forecast", top_k=100, mode="dense").hits}


@pytest.fixture
def services(tmp_path: Path):  # noqa: ANN201
    emb = CountingEmbedder()
    s = build_services(make_settings(tmp_path), embedder=emb)
    yield s
    s.close()


def test_sync_is_idempotent_incremental_and_propagates_deletes(tmp_path: Path, services: Services) -> None:
    root = tmp_path / "docs"
    write_tree(root)
    src = lambda: FilesystemSource(root, "docs")  # noqa: E731
    first = services.ingestor.sync(src())
    assert first.counts == {"added": 12} and not first.errors
    check_consistent(services)

    emb = services.embedder
    before = emb.texts  # type: ignore[attr-defined]
    again = services.ingestor.sync(src())
    assert again.counts == {"unchanged": 12} and emb.texts == before  # type: ignore[attr-defined]

    (root / "fin" / "f0.md").write_text("# Forecast 0\n\nA completely revised revenue forecast.\n")
    (root / "all" / "a1.txt").unlink()
    third = services.ingestor.sync(src())
    assert third.counts == {"updated": 1, "deleted": 1, "unchanged": 10}
    assert "all/a1.txt" not in visible(services, "tenant:acme")
    check_consistent(services)


def test_acl_only_manifest_change_updates_payload_without_embedding(tmp_path: Path, services: Services) -> None:
    root = tmp_path / "docs"
    write_tree(root, 2)
    services.ingestor.sync(FilesystemSource(root, "docs"))
    assert visible(services, "group:hr") == set()
    before = services.embedder.texts  # type: ignore[attr-defined]
    (root / "acl.toml").write_text('[folders."fin"]\nallow = ["group:hr"]\n[folders."all"]\nallow = ["tenant:acme"]\n')
    report = services.ingestor.sync(FilesystemSource(root, "docs"))
    assert report.counts == {"acl_updated": 2, "unchanged": 2}
    assert services.embedder.texts == before  # type: ignore[attr-defined]
    assert visible(services, "group:hr") == {"fin/f0.md", "fin/f1.md"}
    assert visible(services, "group:finance") == set()
    check_consistent(services)


def test_bad_files_fail_alone_with_codes(tmp_path: Path, services: Services) -> None:
    root = tmp_path / "docs"
    write_tree(root, 2)
    (root / "all" / "empty.txt").write_text("")
    (root / "all" / "broken.docx").write_bytes(b"PK\x03\x04 this is not a zip")
    (root / "all" / "tool.exe").write_bytes(b"MZ\x90\x00")
    report = services.ingestor.sync(FilesystemSource(root, "docs"))
    codes = {doc.rsplit("/", 1)[1]: code for doc, code, _ in report.errors}
    assert codes["empty.txt"] == "empty_file" and codes["tool.exe"] == "unsupported_type"
    assert codes["broken.docx"] in {"corrupt_file", "parse_failed"}
    assert report.counts["added"] == 4 and report.counts["failed"] == 3
    items = services.catalog.job_items(report.job_id)
    assert {i.error_code for i in items if i.outcome == "failed"} == set(codes.values())
    check_consistent(services)


def test_kill_9_during_ingest_recovers_consistently(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write_tree(root, 40)
    env = {**os.environ, "CLEARANCE_STORAGE__DATA_DIR": str(tmp_path / "var"), "CLEARANCE_EMBEDDER__KIND": "hash"}
    cmd = [sys.executable, "-c", "from cli.main import run; run()", "ingest", str(root), "--source", "docs"]
    rng = random.Random(1234)
    progress: list[int] = []

    def indexed() -> int:
        catalog = Catalog(f"sqlite:///{tmp_path / 'var' / 'catalog.sqlite3'}")
        try:
            return sum(1 for r in catalog.documents() if r.state == "indexed" and r.content_hash)
        finally:
            catalog.close()

    for attempt in range(4):
        before = indexed() if (tmp_path / "var" / "catalog.sqlite3").exists() else 0
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        # Wait until this run is writing (past imports and recovery), then kill at a random moment.
        while proc.poll() is None and time.time() < deadline:
            if (tmp_path / "var" / "catalog.sqlite3").exists() and indexed() > before:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        progress.append(indexed())
        if attempt == 1:  # change content and ACLs between crashes
            (root / "fin" / "f3.md").write_text("# Forecast 3\n\nRewritten after a crash.\n")
            (root / "all" / "a5.txt").unlink()
            (root / "acl.toml").write_text('[folders."fin"]\nallow = ["group:hr"]\n[folders."all"]\nallow = ["tenant:acme"]\n')
    print("documents fully indexed when each kill landed:", progress)
    assert any(0 < n < 80 for n in progress), "no kill landed in the middle of a job"
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    services = build_services(make_settings(tmp_path))
    try:
        check_consistent(services)
        assert {r.doc_id for r in services.catalog.documents()} == {p.relative_to(root).as_posix() for p in FilesystemSource(root).paths()}
    finally:
        services.close()


def test_same_document_twice_in_one_batch_ends_as_the_last_version(services: Services) -> None:
    from datetime import datetime

    from core.types import Acl, SourceDocument

    def doc(text: str, group: str) -> SourceDocument:
        return SourceDocument("push", "x", "push://x", "x.txt", text.encode(), Acl(frozenset({group})),
                              datetime(2026, 1, 1, tzinfo=UTC))

    long = "\n\n".join(f"Paragraph {i} about revenue forecast. " * 30 for i in range(8))
    results = services.ingestor.apply_many([doc(long, "group:finance"), doc("short revenue forecast", "group:hr")])
    assert results[0][0] == "added" and results[1][0] == "updated"  # type: ignore[index]
    assert visible(services, "group:hr") == {"x"} and visible(services, "group:finance") == set()
    check_consistent(services)
