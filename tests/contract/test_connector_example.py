"""The connector contract suite on the example connector of the documentation
(``docs/example_connector.py``), so the example people copy is known to pass it."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from ingest.connectors.contract import Connector, SourceIdentity
from testkit.connector_contract import ConnectorContract, ConnectorHarness

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "example_connector.py"


def example_module() -> ModuleType:
    """docs/ is no package: load the example from its file."""
    spec = importlib.util.spec_from_file_location("clearance_docs_example_connector", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class NotesHarness:
    namespace = "notes"

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.cls = example_module().NotesConnector
        self._tick = 0

    def connector(self) -> Connector:
        c: Connector = self.cls("contract-notes", {"root": str(self.root)})
        return c

    def _bump(self, path: Path) -> None:
        self._tick += 1
        os.utime(path, ns=(1_700_000_000_000_000_000 + self._tick, 1_700_000_000_000_000_000 + self._tick))

    def add(self, hint: str, text: str, readers: list[SourceIdentity]) -> str:
        (self.root / f"{hint}.txt").write_text(text)
        self._bump(self.root / f"{hint}.txt")
        self.set_readers(hint, readers)
        return hint

    def edit(self, doc_id: str, text: str) -> None:
        (self.root / f"{doc_id}.txt").write_text(text)
        self._bump(self.root / f"{doc_id}.txt")

    def set_readers(self, doc_id: str, readers: list[SourceIdentity]) -> None:
        (self.root / f"{doc_id}.acl").write_text("".join(f"{r.kind} {r.name}\n" for r in readers))

    def remove(self, doc_id: str) -> None:
        (self.root / f"{doc_id}.txt").unlink()
        (self.root / f"{doc_id}.acl").unlink(missing_ok=True)

    def close(self) -> None:
        return None


class TestExampleConnector(ConnectorContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> Iterator[ConnectorHarness]:
        h = NotesHarness(tmp_path / "notes")
        yield h
        h.close()
