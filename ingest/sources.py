"""Document sources behind one Protocol. A source that cannot state an ACL yields a private one.

``FilesystemSource`` reads one folder and never leaves it: the root is resolved first, then
every entry is looked at without following links (``lstat``). A symlink is followed only when
its target resolves inside the root; one that points outside (``/etc/passwd``, ``../..``,
``/proc/self/environ``) is skipped with ``symlink_escape``. Anything that is not a regular file
(FIFOs, sockets, device files, also behind a link) is skipped with ``not_regular_file`` and is
never opened, so a FIFO cannot stall a job. Files are opened with ``O_NOFOLLOW`` and checked
again on the open descriptor, so a file swapped for a link after the listing is refused too.
Hidden entries (``.x``) and ``_x`` are ignored, as are ``acl.toml`` and ``README.md`` at the root.

The manifest is read when the source is made; its problems, and the listing-dependent ones
(entries matching nothing, a foreign tenant) are raised together as ``ManifestError`` before
any document is produced.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from core.errors import ClearanceError, IngestError
from core.types import Acl, SourceDocument
from ingest.manifest import MANIFEST_NAME, AclManifest, ManifestError
from ingest.parse import SUPPORTED

PRIVATE_WARNING = "private: no principal can read it"


class DocumentSource(Protocol):
    """Enumerates the documents a source currently holds (full listing, used for sync)."""

    name: str

    def doc_ids(self) -> list[str]:
        """The ids of every document in the listing (read before any write: the mass-delete
        guard compares them with the catalog)."""
        ...

    def documents(self) -> Iterator[SourceDocument]:
        ...


@dataclass(frozen=True)
class Skipped:
    """A file the listing refused to read, with its per-file code."""

    rel: str
    code: str  # symlink_escape | not_regular_file | unreadable | vanished | too_large
    message: str


class FilesystemSource:
    """A directory tree with an optional ``acl.toml``; doc ids are POSIX paths under the root."""

    def __init__(self, root: Path, name: str | None = None, *, tenant: str | None = None) -> None:
        try:
            self.root = root.resolve(strict=True)
        except OSError as exc:
            raise IngestError(f"not a directory: {root}", code="not_a_directory") from exc
        if not self.root.is_dir():
            raise IngestError(f"not a directory: {root}", code="not_a_directory")
        self.name = name or self.root.name
        self.skipped: list[Skipped] = []
        # Files over this are refused (``too_large``) unread; the ingestor sets its own cap.
        self.max_file_bytes: int | None = None
        self._files: list[tuple[str, Path]] = []  # (rel, path to open: the entry or its resolved target)
        self._folders: set[str] = set()
        self._scan()
        self.manifest, problems = AclManifest.parse(self.root)
        mpath = self.root / MANIFEST_NAME
        if mpath.is_symlink() and not _inside(mpath.resolve(), self.root):
            problems = [f"{MANIFEST_NAME} is a link to outside the folder", *problems]
        problems += self.manifest.problems(self.doc_ids(), self._folders, tenant)
        if problems:
            raise ManifestError(mpath, problems)

    # -- listing ------------------------------------------------------------------------------
    def _scan(self) -> None:
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            base = Path(dirpath)
            rel_dir = base.relative_to(self.root)
            dirnames.sort()
            keep = []
            for d in dirnames:
                if d.startswith((".", "_")):
                    continue
                p = base / d
                rel = (rel_dir / d).as_posix()
                if p.is_symlink():  # os.walk lists links to folders as folders but does not enter them
                    # A link to a folder inside the root adds nothing (its files are read where
                    # they live); one to outside is reported.
                    if not _inside(p.resolve(), self.root):
                        self.skipped.append(Skipped(rel, "symlink_escape", "skipped: a link to a folder outside the root"))
                    continue
                keep.append(d)
                self._folders.add(rel)
            dirnames[:] = keep
            for f in sorted(filenames):
                if f.startswith((".", "_")):
                    continue
                rel = (rel_dir / f).as_posix()
                if rel_dir == Path(".") and f in (MANIFEST_NAME, "README.md"):
                    continue
                self._consider(rel, base / f)

    def _consider(self, rel: str, p: Path) -> None:
        try:
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                target = p.resolve()
                if not _inside(target, self.root):
                    self.skipped.append(Skipped(rel, "symlink_escape", "skipped: a link to outside the root"))
                    return
                st = target.stat()
                if not stat.S_ISREG(st.st_mode):
                    self.skipped.append(Skipped(rel, "not_regular_file", "skipped: a link to something not a file"))
                    return
                self._files.append((rel, target))
                return
        except OSError as exc:
            self.skipped.append(Skipped(rel, "unreadable", f"skipped: {type(exc).__name__}"))
            return
        if not stat.S_ISREG(st.st_mode):
            self.skipped.append(Skipped(rel, "not_regular_file", "skipped: not a regular file (FIFO, socket, device)"))
            return
        self._files.append((rel, p))

    def files(self) -> list[tuple[str, Path]]:
        """(doc id, path to read) for every file to ingest."""
        return list(self._files)

    def doc_ids(self) -> list[str]:
        return [rel for rel, _ in self._files]

    def paths(self) -> list[Path]:
        """The files to ingest (a link inside the root appears as the file it points to)."""
        return [p for _, p in self._files]

    def acl_table(self) -> dict[str, Acl]:
        """Every file's effective ACL."""
        return {rel: self.manifest.acl_for(rel) for rel, _ in self._files}

    def warnings(self) -> list[str]:
        """Files nothing makes readable: reported by dry runs and in every job summary."""
        return [f"{rel}: {PRIVATE_WARNING}" for rel, acl in self.acl_table().items() if not acl.allow]

    # -- documents ------------------------------------------------------------------------------
    def read(self, rel: str, path: Path) -> SourceDocument:
        content, mtime = read_regular(path, self.max_file_bytes)
        return SourceDocument(
            source=self.name,
            doc_id=rel,
            uri=(self.root / rel).as_uri(),
            filename=Path(rel).name,
            content=content,
            acl=self.manifest.acl_for(rel),
            modified_at=datetime.fromtimestamp(mtime, UTC),
            title=Path(rel).stem.replace("-", " ").replace("_", " "),
        )

    def documents(self) -> Iterator[SourceDocument]:
        for rel, path in self._files:
            try:
                yield self.read(rel, path)
            except ClearanceError as exc:
                self.skipped.append(Skipped(rel, exc.code, exc.message))

    @staticmethod
    def supported(path: Path) -> bool:
        return path.suffix.lower() in SUPPORTED


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def read_regular(path: Path, limit: int | None = None) -> tuple[bytes, float]:
    """Read a regular file without following a link at its last component and without blocking
    on a FIFO; the type is checked on the open descriptor. A file over ``limit`` bytes is refused
    (``too_large``) without being read, so it never costs its size in memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise IngestError("vanished before it was read", code="vanished") from exc
    except OSError as exc:
        raise IngestError(f"cannot be opened: {type(exc).__name__}", code="not_regular_file") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IngestError("not a regular file", code="not_regular_file")
        if limit is not None and st.st_size > limit:
            raise IngestError(f"file exceeds {limit} bytes", code="too_large")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read() if limit is None else fh.read(limit + 1)
        if limit is not None and len(data) > limit:  # it grew since the stat
            raise IngestError(f"file exceeds {limit} bytes", code="too_large")
        return data, st.st_mtime
    finally:
        os.close(fd)


def content_hash(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
