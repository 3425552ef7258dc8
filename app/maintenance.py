"""Operations on the whole store: backup and restore (embedded), and reindex.

Backup while serving. The process that opens the Edge shard owns it (README, "Who owns the
index"), so a backup is taken by that process: the CLI's own when no server runs, the server's
(``POST /v1/admin/backups``) when one does. Consistency: every document write goes through
``Catalog.write_lock`` and every index mutation through the index's write lock; ``backup`` holds
both (in that order, the order writers take them), flushes the shard, copies it and takes
SQLite's online backup of the catalog, then lets writers go. The catalog and the index in the
backup therefore describe one instant; searches are never blocked, writes wait for the copy.

Reindex. Rebuilds the index from the catalog's recorded sources (filesystem sources and their
roots): the old index is set aside (Edge: the shard folder is renamed; Qdrant server: the
collection is dropped), the catalog forgets every document's points (as ``recover`` does for one
document), and each filesystem source is synced again into a new index of the current schema
version. Pushed documents cannot be rebuilt (their content lives in the system of record): they
keep their catalog rows with no chunks and are listed, to be pushed again.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, update
from sqlmodel import col, select

from app.index_schema import check_index_schema, read_marker, uses_server
from app.services import Services, build_index, build_services, open_catalog_and_index
from core.errors import BackendUnavailableError, InvalidRequestError
from core.settings import Settings
from retrieval.embedder import Embedder, build_embedder
from retrieval.index import ChunkIndex
from store import backup as files
from store.catalog import Catalog, DocState, DocumentRow, SourceRegistryRow, SourceRow
from store.migrate import state as schema_state

BACKUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


# -- backup -----------------------------------------------------------------------------------
class Store(Protocol):
    """What a backup reads: ``Services`` (a server) and ``OpenStore`` (the CLI) both have it."""

    settings: Settings
    catalog: Catalog
    index: ChunkIndex


def backup(services: Store, out: Path) -> files.Snapshot:
    """A consistent backup of this process's embedded store into ``out`` (new or empty)."""
    settings = services.settings
    if uses_server(settings):
        raise files.BackupError(files.UNSUPPORTED, code="backup_unsupported")
    catalog_db = files.sqlite_path(settings.catalog_url())
    files.prepare_out(out)
    with services.catalog.quiesce(), services.index.writes_held():
        services.index.flush()
        info = {
            "created_at": datetime.now(UTC).isoformat(),  # the instant the copy describes
            "tenant": settings.ingest.tenant,
            "catalog": {"revision": schema_state(services.catalog.engine).current, "documents": _documents(services.catalog)},
            "index": {"schema": read_marker(settings.storage.edge_path), "points": services.index.size(),
                      "dim": getattr(services.index, "dim", None)},
        }
        files.copy_store(out, catalog_db=catalog_db, edge_dir=settings.storage.edge_path,
                         dev_key=settings.storage.dev_key_path)
    return files.write_manifest(out, info)  # checksums of the copy: writers need not wait for them


def backup_named(services: Services, name: str | None) -> files.Snapshot:
    """A backup into ``storage.backup_dir``/``name`` (for the API: callers name, never place, it)."""
    name = name or datetime.now(UTC).strftime("backup-%Y%m%dT%H%M%S%fZ")
    if not BACKUP_NAME.match(name):
        raise InvalidRequestError("a backup name is 1-100 letters, digits, '.', '_' or '-'", code="invalid_backup_name")
    return backup(services, services.settings.storage.backups_path / name)


def _documents(catalog: Catalog) -> int:
    with catalog.session() as s:
        return int(s.exec(select(func.count()).select_from(DocumentRow)).one())


@dataclass
class OpenStore:
    """The embedded store opened without the model (backup needs no embedder)."""

    settings: Settings
    catalog: Catalog
    index: ChunkIndex

    def close(self) -> None:
        self.index.close()
        self.catalog.close()


def open_store(settings: Settings) -> OpenStore:
    """Catalog and index, schema-checked; ``BackendUnavailableError(index_locked)`` when a
    running server owns the shard."""
    catalog, index = open_catalog_and_index(settings, settings.embedder.dim)
    return OpenStore(settings, catalog, index)


# -- restore ----------------------------------------------------------------------------------
def restore(settings: Settings, source: Path, *, force: bool = False) -> dict[str, Any]:
    """Put a backup in place as this deployment's embedded store, then open it to check that
    catalog and index hold what the manifest says (an older catalog is upgraded on the way)."""
    if uses_server(settings):
        raise files.BackupError(files.UNSUPPORTED, code="backup_unsupported")
    catalog_db = files.sqlite_path(settings.catalog_url())
    manifest = files.read_manifest(source)
    edge = settings.storage.edge_path
    if edge.exists() and any(edge.iterdir()):
        _refuse_if_owned(settings, int(manifest["index"].get("dim") or settings.embedder.dim))
    aside = files.restore_files(source, catalog_db=catalog_db, edge_dir=edge, dev_key=settings.storage.dev_key_path,
                                force=force)
    dim = int(manifest["index"].get("dim") or settings.embedder.dim)
    catalog = Catalog(settings.catalog_url(), auto_migrate=settings.auto_migrate())
    try:
        index = build_index(settings, dim)
        try:
            check_index_schema(settings, index)
            points, documents = index.size(), _documents(catalog)
        finally:
            index.close()
        revision = schema_state(catalog.engine).current
    finally:
        catalog.close()
    expected = (manifest["index"]["points"], manifest["catalog"]["documents"])
    if (points, documents) != expected:
        raise files.BackupError(f"restored store holds {points} points and {documents} documents; the backup recorded "
                                f"{expected[0]} and {expected[1]}", code="restore_mismatch")
    return {"from": str(source), "created_at": manifest["created_at"], "points": points, "documents": documents,
            "catalog_revision": revision, "moved_aside": str(aside) if aside else None}


def _refuse_if_owned(settings: Settings, dim: int) -> None:
    try:
        build_index(settings, dim).close()
    except BackendUnavailableError as exc:
        if exc.code == "index_locked":
            raise files.BackupError("a running process owns the index: stop the server before restoring",
                                    code="index_locked") from exc
        raise


# -- reindex ----------------------------------------------------------------------------------
@dataclass
class ReindexReport:
    previous: str | None  # where the old index went (Edge), or None (dropped collection)
    synced: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> outcome counts
    errors: dict[str, str] = field(default_factory=dict)  # source -> why it could not be synced
    to_push: dict[str, int] = field(default_factory=dict)  # source -> documents without chunks
    points: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"previous_index": self.previous, "synced": self.synced, "errors": self.errors,
                "documents_to_push_again": self.to_push, "points": self.points}


def filesystem_roots(catalog: Catalog) -> dict[str, str]:
    """Every filesystem source with the folder it was last synced from."""
    with catalog.session() as s:
        roots = {r.name: r.root for r in s.exec(select(SourceRow)).all() if r.kind == "filesystem" and r.root}
        roots.update({r.name: r.root for r in s.exec(select(SourceRegistryRow)).all() if r.kind == "filesystem" and r.root})
    return roots


def reindex(settings: Settings, *, embedder: Embedder | None = None,
            progress: Callable[[str, str], None] | None = None) -> ReindexReport:
    from ingest.sources import FilesystemSource

    embedder = embedder or build_embedder(settings.embedder)
    catalog = Catalog(settings.catalog_url(), auto_migrate=settings.auto_migrate())
    try:
        roots = filesystem_roots(catalog)
        previous = _set_index_aside(settings, embedder.dim)
        with catalog.session() as s:  # the points are gone: every document must be written again
            s.exec(update(DocumentRow).values(point_ids="[]", pending_ids="[]", content_hash="",  # type: ignore[call-overload]
                                              state=DocState.INDEXED))
            s.commit()
    finally:
        catalog.close()
    report = ReindexReport(previous)
    services = build_services(settings, embedder=embedder)  # a new index at the current schema version
    try:
        for name, root in sorted(roots.items()):
            try:
                src = FilesystemSource(Path(root), name, tenant=settings.ingest.tenant)
                job = services.ingestor.sync(src, progress=progress)
            except Exception as exc:  # a root that is gone, a broken manifest: the others go on
                report.errors[name] = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                continue
            report.synced[name] = dict(job.counts)
        services.index.optimize()
        with services.catalog.session() as s:
            rows = s.exec(select(DocumentRow.source, func.count()).where(col(DocumentRow.point_ids) == "[]")
                          .group_by(DocumentRow.source)).all()
        report.to_push = {source: int(n) for source, n in rows}
        report.points = services.index.size()
    finally:
        services.close()
    return report


def _set_index_aside(settings: Settings, dim: int) -> str | None:
    if uses_server(settings):
        index = build_index(settings, dim)
        index.drop()
        return None
    edge = settings.storage.edge_path
    if not edge.exists() or not any(edge.iterdir()):
        return None
    _refuse_if_owned(settings, dim)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = edge.with_name(f"{edge.name}.before-reindex-{stamp}")
    shutil.move(str(edge), aside)
    return str(aside)
