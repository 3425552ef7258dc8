"""The connector contract suite (``testkit.connector_contract``) on the filesystem connector: a
real folder with a real ``acl.toml``, edited the way an operator would."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.connectors.contract import Connector, SourceIdentity
from ingest.connectors.filesystem import FilesystemConnector
from testkit.connector_contract import ConnectorContract, ConnectorHarness


class FolderHarness:
    """A folder whose files each have their own ``[files."x"]`` entry in ``acl.toml``."""

    namespace = "clearance"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.readers: dict[str, list[SourceIdentity]] = {}
        self._tick = 0

    def connector(self) -> Connector:
        return FilesystemConnector("contract-fs", {"root": str(self.root)})

    def _write_manifest(self) -> None:
        lines = []
        for doc_id, readers in sorted(self.readers.items()):
            lines.append(f"[files.{json.dumps(doc_id)}]")
            lines.append(f"allow = {json.dumps(sorted(r.name for r in readers))}")
        (self.root / "acl.toml").write_text("\n".join(lines) + "\n")

    def _write(self, path: Path, text: str) -> None:
        path.write_text(text + "\n")
        self._tick += 1  # distinct mtimes whatever the file system's timestamp granularity
        t = 1_700_000_000 + self._tick
        os.utime(path, (t, t))

    def add(self, hint: str, text: str, readers: list[SourceIdentity]) -> str:
        doc_id = f"{hint}.txt"
        self._write(self.root / doc_id, text)
        self.readers[doc_id] = list(readers)
        self._write_manifest()
        return doc_id

    def edit(self, doc_id: str, text: str) -> None:
        self._write(self.root / doc_id, text)

    def set_readers(self, doc_id: str, readers: list[SourceIdentity]) -> None:
        self.readers[doc_id] = list(readers)
        self._write_manifest()

    def remove(self, doc_id: str) -> None:
        (self.root / doc_id).unlink()
        self.readers.pop(doc_id, None)
        self._write_manifest()

    def close(self) -> None:
        return None


class TestFilesystemConnector(ConnectorContract):
    READERS = (("user", "user:alice@corp.example"), ("user", "user:bob@corp.example"), ("group", "group:staff"))

    @pytest.fixture
    def harness(self, tmp_path: Path) -> Iterator[ConnectorHarness]:
        h = FolderHarness(tmp_path / "share")
        yield h
        h.close()


def test_a_touched_file_with_the_same_bytes_is_not_yielded(tmp_path: Path) -> None:
    h = FolderHarness(tmp_path / "share")
    doc = h.add("same", "unchanged words", [SourceIdentity("user", "user:a", "clearance")])
    c = h.connector()
    cp = [b.checkpoint for b in c.documents(None)][-1]
    os.utime(h.root / doc, (1_800_000_000, 1_800_000_000))
    assert [d.doc_id for b in c.documents(cp) for d in b.items] == []


def test_a_bad_manifest_fails_the_stream_before_any_document(tmp_path: Path) -> None:
    h = FolderHarness(tmp_path / "share")
    h.add("x", "words", [SourceIdentity("user", "user:a", "clearance")])
    (h.root / "acl.toml").write_text('[files."nope.txt"]\nallow = ["user:a"]\n')
    from ingest.manifest import ManifestError

    with pytest.raises(ManifestError):
        next(iter(h.connector().documents(None)))
