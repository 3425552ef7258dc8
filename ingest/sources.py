"""Document sources behind one Protocol. A source that cannot state an ACL yields a private one."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Protocol

from core.types import SourceDocument
from ingest.manifest import MANIFEST_NAME, AclManifest
from ingest.parse import SUPPORTED


class DocumentSource(Protocol):
    """Enumerates the documents a source currently holds (full listing, used for sync)."""

    name: str

    def documents(self) -> Iterator[SourceDocument]:
        ...


class FilesystemSource:
    """A directory tree with an optional ``acl.toml``; doc ids are POSIX paths under the root."""

    def __init__(self, root: Path, name: str | None = None) -> None:
        self.root = root.resolve()
        self.name = name or self.root.name
        self.manifest = AclManifest.load(self.root)

    def paths(self) -> list[Path]:
        out = []
        for p in sorted(self.root.rglob("*")):
            rel = p.relative_to(self.root)
            if not p.is_file() or any(part.startswith((".", "_")) for part in rel.parts):
                continue
            if len(rel.parts) == 1 and p.name in (MANIFEST_NAME, "README.md"):
                continue
            out.append(p)
        return out

    def documents(self) -> Iterator[SourceDocument]:
        for p in self.paths():
            rel = p.relative_to(self.root).as_posix()
            stat = p.stat()
            yield SourceDocument(
                source=self.name,
                doc_id=rel,
                uri=p.as_uri(),
                filename=p.name,
                content=p.read_bytes(),
                acl=self.manifest.acl_for(rel),
                modified_at=datetime.fromtimestamp(stat.st_mtime, timezone.utc),
                title=p.stem.replace("-", " ").replace("_", " "),
            )

    @staticmethod
    def supported(path: Path) -> bool:
        return path.suffix.lower() in SUPPORTED


def content_hash(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
