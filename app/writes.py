"""Write service: every change to the index and catalog that a caller asks for (push PUT,
PATCH acl, DELETE, folder jobs, resyncs) goes through here, so routes and the CLI never
orchestrate the write path themselves.

Invariants: a write reaches ``Ingestor``/``IndexWriter`` only from here; each write restarts
its source's freshness clock after it succeeded; a PATCH of an unknown document is a 404 decided
under the document's write lock (``IndexWriter.set_acl``), never a check-then-act race.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import IngestError, InvalidRequestError, NotFoundError
from core.settings import IngestSettings
from core.types import Acl, Entitlements, SourceDocument
from ingest.contracts import check_contract
from ingest.pipeline import Ingestor, JobReport
from ingest.sources import FilesystemSource
from store.catalog import Catalog, unavailable


@dataclass(frozen=True)
class PutOutcome:
    outcome: str
    chunks: int


class WriteService:
    def __init__(self, settings: IngestSettings, catalog: Catalog, ingestor: Ingestor) -> None:
        self._settings = settings
        self._catalog = catalog
        self._ingestor = ingestor

    def put_document(self, caller: Entitlements, doc: SourceDocument, metadata: dict[str, object]) -> PutOutcome:
        check_contract(doc.source, metadata, self._settings.contracts)
        outcome, chunks = self._ingestor.apply(doc)
        self._catalog.record_push(doc.source)
        return PutOutcome(outcome, chunks)

    def set_acl(self, caller: Entitlements, source: str, doc_id: str, acl: Acl) -> None:
        try:
            self._ingestor.set_acl(self._ingestor.doc_key(source, doc_id), acl)
        except IngestError as exc:
            if exc.code == "not_found":
                raise NotFoundError("document not found") from exc
            raise
        self._catalog.record_push(source)

    def delete_document(self, caller: Entitlements, source: str, doc_id: str) -> None:
        if not self._ingestor.delete(source, doc_id):
            raise NotFoundError("document not found")
        self._catalog.record_push(source)

    def sync_folder(self, caller: Entitlements, path: str, source: str | None) -> JobReport:
        """Sync a directory on the server's filesystem (how the CLI ingests while the server
        owns the index)."""
        root = Path(path)
        if not root.is_dir():
            raise InvalidRequestError(f"not a directory on the server: {path}")
        return self._ingestor.sync(FilesystemSource(root, source))

    def resync(self, caller: Entitlements, source: str) -> JobReport:
        """Sync a filesystem source again from the root it was last synced from."""
        with unavailable("catalog"):
            row = self._catalog.source_row(source)
        if row is None:
            raise NotFoundError(f"unknown source {source!r}")
        if row.kind != "filesystem" or not row.root:
            raise InvalidRequestError(f"source {source!r} is not a filesystem source (it is {row.kind}); "
                                      "push sources are refreshed by their system of record", code="not_resyncable")
        root = Path(row.root)
        if not root.is_dir():
            raise InvalidRequestError(f"the root of source {source!r} is no longer a directory on the server",
                                      code="source_root_missing")
        return self._ingestor.sync(FilesystemSource(root, source))
