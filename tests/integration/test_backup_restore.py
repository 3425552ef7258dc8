"""Backup and restore.

Embedded store (Edge shard + SQLite catalog): a backup taken while searches and writes run
restores into a new data dir where catalog and index agree exactly and a fixed set of searches
gives the same answers; one taken at rest gives identical hybrid answers; a running server takes
the backup when `clearance backup` finds the shard owned. Scale-out catalog (PostgreSQL): the
documented pg_dump / pg_restore procedure brings back every row at the same schema revision
(Qdrant server snapshots cannot be exercised here: no server binary).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from app.index_schema import INDEX_SCHEMA_VERSION
from app.maintenance import backup, backup_named, restore
from app.services import Services, build_services
from core.settings import QdrantSettings
from core.types import Acl, Entitlements, Scope, SourceDocument
from ingest.sources import FilesystemSource
from store import backup as files
from store import migrate
from store.catalog import Catalog
from tests.conftest import REPO, make_settings
from tests.contract.test_catalog import PG, _pg_available
from tests.integration.test_ingest_sync import check_consistent, write_tree

QUERIES = ("revenue forecast", "company announcement", "quarter", "pushed note about budgets")
# The reader never sees the writer's documents (group:live), so its dense answers cannot move
# while they are written: any difference after restore would be the backup's fault.
READER = Scope(Entitlements("reader", "test", "acme", frozenset({"tenant:acme", "group:finance", "user:reader"})))
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def answers(services: Services, mode: str) -> list[list[tuple[str, float]]]:
    return [[(h.id, round(h.score, 6)) for h in services.search_unaudited.search(READER, q, top_k=50, mode=mode).hits]  # type: ignore[arg-type]
            for q in QUERIES]


def documents(services: Services, sources: set[str] | None = None) -> dict[str, tuple[str, str, str, str]]:
    return {r.key: (r.content_hash, r.acl_allow, r.acl_deny, r.point_ids) for r in services.catalog.documents()
            if sources is None or r.source in sources}


def pushed(i: int, source: str = "wiki", allow: str = "group:finance", text_: str = "") -> SourceDocument:
    body = text_ or f"Pushed note about budgets number {i}. " * 3
    return SourceDocument(source, f"n{i}.txt", f"push://{source}/{i}", f"n{i}.txt", body.encode(),
                          Acl(frozenset({allow})), T0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Services]:
    services = build_services(make_settings(tmp_path / "a"))
    root = tmp_path / "docs"
    write_tree(root, n=10)
    services.ingestor.sync(FilesystemSource(root, "docs"))
    for i in range(5):
        services.ingestor.apply(pushed(i))
    yield services
    services.close()


def test_backup_while_searching_and_writing_restores_consistently(store: Services, tmp_path: Path) -> None:
    baseline = answers(store, "dense")
    stable = documents(store, {"docs", "wiki"})
    stop = threading.Event()
    errors: list[BaseException] = []
    searched: list[float] = []
    written: list[float] = []

    def searcher() -> None:
        while not stop.is_set():
            try:
                assert answers(store, "dense") == baseline
                answers(store, "hybrid")
                searched.append(time.monotonic())
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    def writer() -> None:
        i = 0
        while not stop.is_set():
            try:
                store.ingestor.apply(pushed(i % 7, "live", "group:live", f"Live entry {i} with fresh words {i * 7}."))
                if i % 5 == 4:
                    store.ingestor.delete("live", f"n{(i - 2) % 7}.txt")
                written.append(time.monotonic())
                i += 1
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    threads = [threading.Thread(target=searcher), threading.Thread(target=searcher), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    while len(written) < 5 or len(searched) < 5:
        time.sleep(0.02)
        assert not errors, errors
    started = time.monotonic()
    snap = backup(store, tmp_path / "backup")
    finished = time.monotonic()
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert any(w < started for w in written) and any(w > finished for w in written), "writes ran before and after"
    assert any(s > finished for s in searched)

    result = restore(make_settings(tmp_path / "b"), snap.path)
    assert result["points"] == snap.manifest["index"]["points"] and result["documents"] == snap.manifest["catalog"]["documents"]
    restored = build_services(make_settings(tmp_path / "b"))
    try:
        check_consistent(restored)  # every catalog id in the index, nothing else, same ACLs
        assert answers(restored, "dense") == baseline
        assert documents(restored, {"docs", "wiki"}) == stable
        live = documents(restored, {"live"})
        assert live and all(v[3] != "[]" for v in live.values())  # writes before the backup are in it, whole
    finally:
        restored.close()


def test_a_backup_at_rest_restores_identical_answers(store: Services, tmp_path: Path) -> None:
    snap = backup(store, tmp_path / "backup")
    assert snap.manifest["catalog"]["revision"] == migrate.head_revision()
    assert snap.manifest["index"]["schema"] == INDEX_SCHEMA_VERSION
    assert set(snap.manifest["files"]) >= {"catalog.sqlite3", "edge/edge_config.json"}
    settings_b = make_settings(tmp_path / "b")
    restore(settings_b, snap.path)
    restored = build_services(settings_b)
    try:
        for mode in ("hybrid", "dense", "bm25"):
            assert answers(restored, mode) == answers(store, mode), mode
        assert documents(restored) == documents(store)
    finally:
        restored.close()
    # the dev issuer's key came along: tokens minted before still validate
    assert settings_b.storage.dev_key_path.read_bytes() == store.settings.storage.dev_key_path.read_bytes()


def test_restore_checks_files_and_refuses_to_overwrite(store: Services, tmp_path: Path) -> None:
    snap = backup(store, tmp_path / "backup")
    with pytest.raises(files.BackupError, match="not an empty folder"):
        backup(store, tmp_path / "backup")
    target = make_settings(tmp_path / "b")
    restore(target, snap.path)
    with pytest.raises(files.BackupError, match="--force") as refused:
        restore(target, snap.path)
    assert refused.value.code == "restore_target_exists"
    moved = restore(target, snap.path, force=True)["moved_aside"]
    assert moved and (Path(moved) / "catalog.sqlite3").exists() and (Path(moved) / "edge").is_dir()

    broken = tmp_path / "broken"
    shutil.copytree(snap.path, broken)
    (broken / "catalog.sqlite3").write_bytes(b"not a database")
    with pytest.raises(files.BackupError, match="catalog.sqlite3 does not match its checksum"):
        restore(make_settings(tmp_path / "c"), broken)
    (broken / files.MANIFEST).unlink()
    with pytest.raises(files.BackupError, match="interrupted backup"):
        restore(make_settings(tmp_path / "c"), broken)


def test_backup_names_from_the_api_stay_in_the_backup_dir(store: Services) -> None:
    snap = backup_named(store, "nightly-1")
    assert snap.path == store.settings.storage.backups_path / "nightly-1"
    for bad in ("../escape", "/abs", "a/b", ".hidden", ""):
        with pytest.raises(Exception) as err:
            backup_named(store, bad) if bad else backup_named(store, "..")
        assert getattr(err.value, "code", "") == "invalid_backup_name"


def test_scale_out_store_is_refused_with_the_procedure(tmp_path: Path) -> None:
    s = make_settings(tmp_path, qdrant=QdrantSettings(local_path=str(tmp_path / "q")))
    services = build_services(s)
    try:
        with pytest.raises(files.BackupError, match="pg_dump") as err:
            backup(services, tmp_path / "out")
        assert err.value.code == "backup_unsupported"
    finally:
        services.close()


def test_cli_backup_goes_through_the_running_server(tmp_path: Path, live_server_factory: type) -> None:
    from api.app import create_app

    settings = make_settings(tmp_path / "a")
    root = tmp_path / "docs"
    write_tree(root, n=4)
    services = build_services(settings)
    services.ingestor.sync(FilesystemSource(root, "docs"))
    expected = answers(services, "hybrid")
    services.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARANCE_")}
    env.update(CLEARANCE_EMBEDDER__KIND="hash")

    def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", "from cli.main import run; run()", *args],
                              env={**env, "CLEARANCE_STORAGE__DATA_DIR": str(data)}, cwd=REPO,
                              capture_output=True, text=True, timeout=300)

    out = tmp_path / "nightly"
    with live_server_factory(create_app(settings)) as live:
        res = cli(settings.storage.data_dir, "backup", "--out", str(out), "--server", live.url)
        assert res.returncode == 0, res.stderr
        assert "owned by the server" in res.stderr and f"backup at {out}" in res.stdout
    assert (out / files.MANIFEST).exists() and not any(settings.storage.backups_path.iterdir())
    target = make_settings(tmp_path / "b")
    res = cli(target.storage.data_dir, "restore", str(out))
    assert res.returncode == 0, res.stderr
    assert "restored 8 documents" in res.stdout
    restored = build_services(target)
    try:
        assert answers(restored, "hybrid") == expected
    finally:
        restored.close()
    # and without a server, the CLI takes the backup itself
    res = cli(target.storage.data_dir, "backup", "--out", str(tmp_path / "again"))
    assert res.returncode == 0 and (tmp_path / "again" / files.MANIFEST).exists(), res.stderr


def test_scale_out_catalog_pg_dump_and_restore(tmp_path: Path) -> None:
    """README, "Backups": pg_dump -Fc of the catalog, pg_restore into a new database."""
    if not _pg_available() or shutil.which("pg_dump") is None:
        pytest.fail("PostgreSQL at 127.0.0.1:5432 and pg_dump are required")
    source_db, target_db = f"clr_src_{uuid.uuid4().hex[:8]}", f"clr_dst_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {source_db}"))
        c.execute(text(f"CREATE DATABASE {target_db}"))
    base = PG.rsplit("/", 1)[0]
    try:
        services = build_services(make_settings(tmp_path, database_url=SecretStr(f"{base}/{source_db}")))
        for i in range(5):
            services.ingestor.apply(pushed(i))
        before = documents(services)
        services.close()
        dump = tmp_path / "catalog.dump"
        subprocess.run(["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "-Fc", "-f", str(dump), source_db], check=True, timeout=120)
        subprocess.run(["pg_restore", "-h", "127.0.0.1", "-U", "postgres", "-d", target_db, "--no-owner", str(dump)],
                       check=True, timeout=120)
        cat = Catalog(f"{base}/{target_db}", auto_migrate=False)  # at the current revision: no migration needed
        try:
            assert {r.key: (r.content_hash, r.acl_allow, r.acl_deny, r.point_ids) for r in cat.documents()} == before
        finally:
            cat.close()
    finally:
        with admin.connect() as c:
            for db in (source_db, target_db):
                c.execute(text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        admin.dispose()
