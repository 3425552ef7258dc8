"""Backup and restore of the embedded store: the Edge shard folder and the SQLite catalog.

A backup is a folder:

    manifest.json       format, time, catalog revision, index schema, counts, SHA-256 of every file
    catalog.sqlite3     SQLite's online backup API: a consistent copy while others read and write
    edge/...            the shard folder, copied after a flush while no write can reach the shard
    dev-issuer-key.pem  the dev issuer's key, when there is one (tokens it minted stay valid)

Consistency is the caller's part (``app.maintenance.backup``): it holds every writer of the
process that owns the shard (catalog writers and the index's own lock, so no document write
and no optimisation is in flight), flushes the shard, and calls ``copy_store`` inside that
window, so the catalog and the index in the backup describe the same instant; the checksums
and the manifest (``write_manifest``) come after, with writers running again. Searches go on
meanwhile; writes wait for the copy. This module only moves files and never imports the index.

The scale-out store (PostgreSQL + Qdrant server) is backed up with the tools of each
(`pg_dump`, Qdrant collection snapshots): README, "Backups".
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import ClearanceError

FORMAT = "clearance-backup/1"
MANIFEST = "manifest.json"
CATALOG_FILE = "catalog.sqlite3"
EDGE_DIR = "edge"
DEV_KEY_FILE = "dev-issuer-key.pem"
# Never copied: lock files of a live shard or catalog, SQLite's sidecars (the online backup
# holds everything they hold).
_SKIP_SUFFIXES = (".lock", ".migrate-lock", "-wal", "-shm", ".tmp")


UNSUPPORTED = ("backup and restore cover the embedded store (SQLite catalog + Edge shard); back up PostgreSQL "
               "with pg_dump and Qdrant server with collection snapshots (README, Backups)")


class BackupError(ClearanceError):
    code = "backup_failed"
    status = 409


@dataclass(frozen=True)
class Snapshot:
    path: Path
    manifest: dict[str, Any]


def sqlite_path(url: str) -> Path:
    if not url.startswith("sqlite:///"):
        raise BackupError(UNSUPPORTED, code="backup_unsupported")
    return Path(url.removeprefix("sqlite:///"))


def prepare_out(out: Path) -> None:
    """``out`` must be new or empty: a backup never mixes with other files."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BackupError(f"{out} exists and is not an empty folder", code="backup_target_exists")
    out.mkdir(parents=True, exist_ok=True)


def copy_sqlite(src: Path, dest: Path) -> None:
    """SQLite's online backup: a transactionally consistent copy, readers and writers go on."""
    source = sqlite3.connect(src, timeout=30)
    try:
        target = sqlite3.connect(dest)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            target.close()
    finally:
        source.close()


def copy_tree(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, ignore=lambda _d, names: [n for n in names if n.endswith(_SKIP_SUFFIXES)],
                    copy_function=copy_sparse)


def copy_sparse(src: str | Path, dst: str | Path) -> None:
    """Copy a file keeping its holes. Edge preallocates its segment files sparsely (a 10-document
    shard: 205 MiB apparent, 0.5 MiB on disk); a plain copy would write every zero."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fd, size, offset = fi.fileno(), os.fstat(fi.fileno()).st_size, 0
        while offset < size:
            try:
                data = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            fi.seek(data)
            fo.seek(data)
            left = hole - data
            while left > 0:
                block = fi.read(min(left, 1 << 20))
                if not block:
                    break
                fo.write(block)
                left -= len(block)
            offset = hole
        fo.truncate(size)
    shutil.copystat(src, dst)


def copy_store(out: Path, *, catalog_db: Path, edge_dir: Path, dev_key: Path | None) -> None:
    """Copy the catalog, the (flushed, quiesced) shard and the dev key into ``out``: the part
    that must happen while writers are held."""
    prepare_out(out)
    copy_sqlite(catalog_db, out / CATALOG_FILE)
    copy_tree(edge_dir, out / EDGE_DIR)
    if dev_key is not None and dev_key.exists():
        shutil.copy2(dev_key, out / DEV_KEY_FILE)
        os.chmod(out / DEV_KEY_FILE, 0o600)


def write_manifest(out: Path, info: dict[str, Any]) -> Snapshot:
    """Checksum the copy (writers may go on meanwhile) and write the manifest, last: a folder
    without one is an interrupted backup and is never restored."""
    manifest = {"format": FORMAT, "created_at": datetime.now(UTC).isoformat(), **info,
                "files": {str(p.relative_to(out)): _sha256(p) for p in sorted(out.rglob("*")) if p.is_file()}}
    tmp = out / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out / MANIFEST)
    return Snapshot(out, manifest)


def read_manifest(backup: Path) -> dict[str, Any]:
    """The manifest of a complete backup, every file checked against its SHA-256."""
    path = backup / MANIFEST
    if not path.exists():
        raise BackupError(f"{backup} is not a backup (no {MANIFEST}; an interrupted backup has none)",
                          code="backup_invalid")
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{backup}: unknown backup format {manifest.get('format')!r}", code="backup_invalid")
    problems = []
    for rel, digest in manifest["files"].items():
        f = backup / rel
        if not f.is_file():
            problems.append(f"{rel} is missing")
        elif _sha256(f) != digest:
            problems.append(f"{rel} does not match its checksum")
    if problems:
        raise BackupError(f"{backup}: " + "; ".join(problems), code="backup_corrupt")
    return manifest


def restore_files(backup: Path, *, catalog_db: Path, edge_dir: Path, dev_key: Path, force: bool) -> Path | None:
    """Put a checked backup in place. Existing data is refused unless ``force``, which moves it
    aside first (returned: the folder it went to). Nothing may have the store open."""
    read_manifest(backup)
    existing = [p for p in (catalog_db, edge_dir) if p.exists() and (p.is_file() or any(p.iterdir()))]
    aside: Path | None = None
    if existing:
        if not force:
            raise BackupError(f"{', '.join(map(str, existing))} already exist: restore into an empty data dir, or pass "
                              "--force to move the current data aside first", code="restore_target_exists")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = catalog_db.parent / f"before-restore-{stamp}"
        aside.mkdir(parents=True)
        for p in (catalog_db, *(catalog_db.with_name(catalog_db.name + s) for s in ("-wal", "-shm")), edge_dir):
            if p.exists():
                shutil.move(str(p), aside / p.name)
    catalog_db.parent.mkdir(parents=True, exist_ok=True)
    edge_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(backup / CATALOG_FILE, catalog_db)
    shutil.copytree(backup / EDGE_DIR, edge_dir, copy_function=copy_sparse)
    if (backup / DEV_KEY_FILE).exists():
        dev_key.parent.mkdir(parents=True, exist_ok=True)
        if dev_key.exists() and aside is not None:
            shutil.move(str(dev_key), aside / dev_key.name)
        shutil.copy2(backup / DEV_KEY_FILE, dev_key)
        os.chmod(dev_key, 0o600)
    return aside


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
