"""The index's schema version lives in the index (Edge: a file in the shard folder; Qdrant
server: collection metadata), is checked when a process opens the index, and `clearance reindex`
rebuilds an index of another version from the catalog's recorded sources."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app import index_schema
from app.maintenance import reindex
from app.services import build_services
from cli.maintenance import index_status
from core.settings import QdrantSettings, Settings
from core.types import Acl, Entitlements, Scope, SourceDocument
from ingest.sources import FilesystemSource
from retrieval.server_index import stored_schema
from tests.conftest import REPO, make_settings
from tests.integration.test_ingest_sync import check_consistent, write_tree

QUERIES = ("revenue forecast", "company announcement", "quarter")


def answers(services: object, mode: str = "hybrid", principals: tuple[str, ...] = ("group:finance",)) -> list[list[tuple[str, float]]]:
    scope = Scope(Entitlements("x", "i", "acme", frozenset({"tenant:acme", *principals})))
    out = []
    for q in QUERIES:
        res = services.search_unaudited.search(scope, q, top_k=50, mode=mode)  # type: ignore[attr-defined]
        out.append([(h.id, round(h.score, 6)) for h in res.hits])
    return out


def test_a_new_edge_index_records_its_version_and_reopens(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    build_services(s).close()
    marker = s.storage.edge_path / index_schema.MARKER_FILE
    assert json.loads(marker.read_text()) == {"schema": index_schema.INDEX_SCHEMA_VERSION}
    build_services(s).close()  # the same version: opens


def test_an_index_of_0_1_0_without_a_version_is_adopted_and_upgraded(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    services = build_services(s)
    services.ingestor.sync(FilesystemSource(_tree(tmp_path), "docs"))
    services.close()
    _as_version_1(s)
    (s.storage.edge_path / index_schema.MARKER_FILE).unlink()  # as 0.1.0 left it
    assert index_schema.LEGACY_VERSION == 1
    # `db status` says so without opening the shard; a data folder with no index needs nothing
    assert index_status(s) == {"where": f"at {s.storage.edge_path}", "schema": None,
                                "head": index_schema.INDEX_SCHEMA_VERSION, "empty": False, "up_to_date": False}
    fresh = index_status(make_settings(tmp_path / "fresh"))
    assert fresh["empty"] and fresh["up_to_date"] and fresh["schema"] is None
    services = build_services(s)  # adopted as version 1, then upgraded in place (embedded: auto_migrate)
    try:
        assert index_schema.read_marker(s.storage.edge_path) == index_schema.INDEX_SCHEMA_VERSION
        check_consistent(services)
        _assert_sample_keys_as_written(services.index)
    finally:
        services.close()


def _as_version_1(s: Settings) -> dict[str, object]:
    """Make the embedded index what version 1 was: no ``sample_key`` on any point."""
    import qdrant_edge as qe

    from retrieval.edge_index import EdgeIndex
    from retrieval.payload import PayloadField

    index = EdgeIndex(s.storage.edge_path, s.embedder.dim)
    try:
        written = {h.id: h.payload[PayloadField.SAMPLE_KEY] for h in index.scroll(_everything(), 10_000)}
        index._shard.update(qe.UpdateOperation.delete_payload(list(written), [PayloadField.SAMPLE_KEY.value]))
        assert not any(PayloadField.SAMPLE_KEY in h.payload for h in index.scroll(_everything(), 10_000))
    finally:
        index.close()
    index_schema.write_marker(s.storage.edge_path, 1)
    return written


def _everything() -> object:
    from retrieval.scope_filter import CompiledFilter

    return CompiledFilter((), ())


def _assert_sample_keys_as_written(index: object) -> None:
    from retrieval.payload import PayloadField, sample_key

    hits = index.scroll(_everything(), 10_000)  # type: ignore[attr-defined]
    assert hits
    for h in hits:
        assert h.payload[PayloadField.SAMPLE_KEY] == sample_key(h.payload[PayloadField.DOC_KEY], h.payload[PayloadField.CHUNK_INDEX])


def test_version_1_is_upgraded_in_place_by_db_upgrade_keeping_every_answer(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    services = build_services(s)
    services.ingestor.sync(FilesystemSource(_tree(tmp_path), "docs"))
    before = {mode: answers(services, mode) for mode in ("hybrid", "bm25", "dense")}
    points = services.index.size()
    services.close()
    written = _as_version_1(s)
    assert len(written) == points

    # where the catalog is not migrated on open, a version 1 index is refused, naming the fix
    manual = s.model_copy(update={"db": s.db.model_copy(update={"auto_migrate": False})})
    with pytest.raises(index_schema.IndexSchemaError, match=r"version 1 \(written by an older release\).*clearance db upgrade"):
        build_services(manual)
    assert index_schema.read_marker(s.storage.edge_path) == 1

    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARANCE_")}
    env.update(CLEARANCE_STORAGE__DATA_DIR=str(s.storage.data_dir), CLEARANCE_EMBEDDER__KIND="hash",
               CLEARANCE_EMBEDDER__DIM=str(s.embedder.dim))
    status = [sys.executable, "-c", "from cli.main import run; run()", "db", "status"]
    res = subprocess.run(status, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr  # the catalog is current; the index is not
    assert (f"index at {s.storage.edge_path}: schema version 1, this release needs {index_schema.INDEX_SCHEMA_VERSION}: "
            "run `clearance db upgrade`") in res.stdout
    cmd = [sys.executable, "-c", "from cli.main import run; run()", "db", "upgrade"]
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"index: upgraded in place from schema version 1 to {index_schema.INDEX_SCHEMA_VERSION}" in res.stdout
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert f"index: at schema version {index_schema.INDEX_SCHEMA_VERSION}" in res.stdout  # safe to run again
    res = subprocess.run([*status, "--json"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout
    assert json.loads(res.stdout)["index"] == {"where": f"at {s.storage.edge_path}", "schema": index_schema.INDEX_SCHEMA_VERSION,
                                               "head": index_schema.INDEX_SCHEMA_VERSION, "empty": False, "up_to_date": True}

    services = build_services(manual)
    try:
        assert services.index.size() == points
        hits = services.index.scroll(_everything(), 10_000)  # type: ignore[arg-type]
        from retrieval.payload import PayloadField

        assert {h.id: h.payload[PayloadField.SAMPLE_KEY] for h in hits} == written  # what the writer wrote
        assert {mode: answers(services, mode) for mode in before} == before
    finally:
        services.close()


def test_another_version_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    build_services(s).close()
    index_schema.write_marker(s.storage.edge_path, index_schema.INDEX_SCHEMA_VERSION + 1)
    with pytest.raises(index_schema.IndexSchemaError, match=r"version 3 \(written by a newer release\).*clearance reindex"):
        build_services(s)
    build_services(s, check_index=False).close()  # only reindex opens it anyway

    # through the CLI: one line, exit 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARANCE_")}
    env.update(CLEARANCE_STORAGE__DATA_DIR=str(s.storage.data_dir), CLEARANCE_EMBEDDER__KIND="hash")
    res = subprocess.run([sys.executable, "-c", "from cli.main import run; run()", "ingest", str(_tree(tmp_path))],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("error")] == [
        f"error [index_schema_mismatch]: the Edge shard at {s.storage.edge_path} holds index schema version 3 (written by "
        "a newer release); this release reads and writes version 2: rebuild it with `clearance reindex`, or run the "
        "release that wrote it"]


def test_qdrant_server_keeps_the_version_in_collection_metadata(tmp_path: Path) -> None:
    s = make_settings(tmp_path, qdrant=QdrantSettings(local_path=str(tmp_path / "qdrant")))
    services = build_services(s)
    try:
        assert services.index.schema_version() == index_schema.INDEX_SCHEMA_VERSION
        index_schema.write_version(s, services.index, 7)
        with pytest.raises(index_schema.IndexSchemaError, match=r"collection 'clearance_chunks' holds index schema version 7"):
            index_schema.check_index_schema(s, services.index)
    finally:
        services.close()
    # what `db status` reads, without creating a collection where there is none
    assert stored_schema(s.qdrant) == (True, 0, 7)
    elsewhere = QdrantSettings(local_path=str(tmp_path / "none"), collection="absent")
    assert stored_schema(elsewhere) == (False, 0, None)
    assert stored_schema(elsewhere) == (False, 0, None)


def test_a_qdrant_server_index_is_upgraded_in_place_too(tmp_path: Path) -> None:
    # The same step through qdrant-client (local mode here; no server binary on this machine),
    # where each pass's thousand distinct values go in one batch request.
    from retrieval.payload import PayloadField

    s = make_settings(tmp_path, qdrant=QdrantSettings(local_path=str(tmp_path / "qdrant")))
    services = build_services(s)
    try:
        services.ingestor.sync(FilesystemSource(_tree(tmp_path), "docs"))
        before = {mode: answers(services, mode) for mode in ("hybrid", "bm25", "dense")}
        index = services.index
        written = {h.id: h.payload[PayloadField.SAMPLE_KEY] for h in index.scroll(_everything(), 10_000)}  # type: ignore[arg-type]
        assert len(written) > 1
        index._client.delete_payload(index.collection, keys=[PayloadField.SAMPLE_KEY.value], points=list(written))  # type: ignore[attr-defined]
        index_schema.write_version(s, index, 1)
        assert index_schema.check_index_schema(s, index, upgrade=True) == index_schema.INDEX_SCHEMA_VERSION
        assert index.schema_version() == index_schema.INDEX_SCHEMA_VERSION
        assert {h.id: h.payload[PayloadField.SAMPLE_KEY] for h in index.scroll(_everything(), 10_000)} == written  # type: ignore[arg-type]
        assert {mode: answers(services, mode) for mode in before} == before
    finally:
        services.close()


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    if not root.exists():
        write_tree(root)
    return root


def test_reindex_rebuilds_from_recorded_sources_and_lists_pushed_documents(tmp_path: Path) -> None:
    s: Settings = make_settings(tmp_path)
    services = build_services(s)
    services.ingestor.sync(FilesystemSource(_tree(tmp_path), "docs"))
    services.ingestor.apply(SourceDocument("wiki", "p1", "push://p1", "p1.txt", b"Pushed revenue note.",
                                           Acl(frozenset({"group:finance"})), datetime(2026, 1, 1, tzinfo=UTC)))
    before = answers(services, "dense")  # dense scores do not depend on the other documents
    pushed = set(services.catalog.get(services.ingestor.doc_key("wiki", "p1")).ids)  # type: ignore[union-attr]
    fs_points = services.index.size() - len(services.catalog.get(services.ingestor.doc_key("wiki", "p1")).ids)  # type: ignore[union-attr]
    services.close()
    index_schema.write_marker(s.storage.edge_path, 99)  # an index this release cannot read
    with pytest.raises(index_schema.IndexSchemaError):
        build_services(s)

    report = reindex(s)
    assert report.previous and Path(report.previous).is_dir() and not report.errors
    assert report.synced["docs"].get("updated", 0) + report.synced["docs"].get("added", 0) == 12
    assert report.to_push == {"wiki": 1} and report.points == fs_points
    services = build_services(s)
    try:
        assert index_schema.read_marker(s.storage.edge_path) == index_schema.INDEX_SCHEMA_VERSION
        check_consistent(services)
        # the filesystem documents answer exactly as before; the pushed one is gone until pushed again
        assert answers(services, "dense") == [[h for h in hits if h[0] not in pushed] for hits in before]
    finally:
        services.close()
