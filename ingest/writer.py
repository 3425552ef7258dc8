"""``IndexWriter``: the one write path into the index and the catalog.

Invariant: for every document, the index holds exactly the chunks its catalog row lists, with
the ACL the row holds, once any interrupted write has been recovered. The protocol that keeps
it, for every kind of write (content, ACL only, delete):

1. take the document's write lock (``Catalog.write_lock``: in-process, and a PostgreSQL
   advisory lock across processes) and re-read its row under it;
2. record the intent: the row goes ``WRITING`` with every id the write may touch in
   ``pending_ids`` (one commit for a batch);
3. change the index (upsert, set payload, delete);
4. commit: the row goes back to ``INDEXED`` with its new ids (or is removed), and the write
   event of the change (``store.audit.change_event``: who, ACL and content before and after) is
   inserted in the same transaction, so no committed change lacks its audit event.

A crash between any two steps leaves the row ``WRITING``; ``recover()`` removes every id it may
have touched and forces a re-ingest, so nothing is lost, duplicated, orphaned or half-updated.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from core.errors import IngestError
from core.settings import SourceContract
from core.types import Acl, SourceDocument
from ingest.chunking import TextChunk
from ingest.contracts import typed_metadata
from ingest.crashpoints import crashpoint
from retrieval.bm25 import Bm25Encoder
from retrieval.index import ChunkIndex, IndexPoint
from retrieval.payload import ChunkPayload, acl_fields, descriptive_fields
from store.audit import change_event
from store.catalog import Catalog, DocState, DocumentRow, as_utc, dumps, utcnow

_NAMESPACE = uuid.UUID("6f1c2a9e-3d5b-4c1e-9a7f-0b8e2d4c6a10")


def point_id(doc_key: str, chunk_index: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{doc_key}#{chunk_index}"))


@dataclass(frozen=True)
class ContentWrite:
    """One document's new content, parsed, chunked and embedded."""

    doc: SourceDocument
    key: str
    digest: str
    chunks: list[TextChunk]
    texts: list[str]  # what was embedded for each chunk (also what BM25 indexes)
    vectors: np.ndarray


class IndexWriter:
    def __init__(self, tenant: str, catalog: Catalog, index: ChunkIndex, bm25: Bm25Encoder,
                 contracts: dict[str, SourceContract] | None = None, *, upsert_points: int = 512) -> None:
        self.contracts = contracts or {}  # declared metadata types: stored typed, for search filters
        # Points are built and upserted this many at a time (``ingest.batch_chunks``): a document
        # of 20,000 chunks never holds 20,000 points (vector lists, sparse vectors, payloads) at once.
        self.upsert_points = max(1, upsert_points)
        self.tenant = tenant
        self.catalog = catalog
        self.index = index
        self.bm25 = bm25

    # -- content --------------------------------------------------------------------------
    def write(self, writes: Sequence[ContentWrite]) -> None:
        """Write a batch: intents (one commit), points (upserted ``upsert_points`` at a time), leftovers (one delete),
        then the rows marked indexed (one commit). Keys must be distinct within a batch."""
        keys = [w.key for w in writes]
        with self.catalog.write_lock(keys):
            # The rows as they are now, under the lock: another writer (a PATCH, a delete) may
            # have changed them since the caller read them.
            current = self.catalog.get_many(keys)
            self._write_locked(writes, current)

    def _write_locked(self, writes: Sequence[ContentWrite], current: dict[str, DocumentRow]) -> None:
        now = utcnow()
        records: list[tuple[DocumentRow, list[str]]] = []
        stale: list[str] = []
        for w in writes:
            row = current.get(w.key)
            doc = w.doc
            new_ids = [point_id(w.key, n) for n in range(len(w.chunks))]
            old_ids = row.ids if row is not None else []
            # A row still ``writing`` (a write died and no recover() ran since, as on the push and
            # worker paths) may have points beyond its ids, in its pending ids: leftovers too.
            left = sorted(set(old_ids) | set(json.loads(row.pending_ids))) if row is not None else []
            version = w.digest[:16]
            records.append((DocumentRow(
                key=w.key, tenant=self.tenant, source=doc.source, doc_id=doc.doc_id, uri=doc.uri,
                title=doc.title, version=version, content_hash=w.digest, acl_allow=dumps(doc.acl.allow),
                acl_deny=dumps(doc.acl.deny), modified_at=doc.modified_at, ingested_at=now, state=DocState.WRITING,
                point_ids=json.dumps(old_ids), pending_ids=json.dumps(sorted(set(left) | set(new_ids))),
                metadata_json=json.dumps(doc.metadata, sort_keys=True),
            ), new_ids))
            stale += sorted(set(left) - set(new_ids))
        # Intent first: a crash after this line is undone by recover().
        self.catalog.put_many([r for r, _ in records])
        crashpoint("catalog_intent")
        points: list[IndexPoint] = []
        for w, (record, new_ids) in zip(writes, records):  # every id is in the intent: any slice may land
            version = record.version
            for n, (pid, vec, text, c) in enumerate(zip(new_ids, w.vectors, w.texts, w.chunks)):
                points.append(IndexPoint(pid, vec.tolist(), self.bm25.encode_document(text),
                                         self._payload(w.doc, version, w.digest, n, c, now).to_index()))
                if len(points) >= self.upsert_points:
                    self.index.upsert(points)
                    points = []
        if points:
            self.index.upsert(points)
        crashpoint("index_upsert")
        self.index.delete(stale)
        crashpoint("stale_delete")
        events = []
        for record, new_ids in records:
            record.state, record.point_ids, record.pending_ids = DocState.INDEXED, json.dumps(new_ids), "[]"
            before = current.get(record.key)
            events.append(change_event("updated" if before is not None else "added", tenant=self.tenant,
                                       source=record.source, doc_id=record.doc_id, before=before, after=record,
                                       detail={"chunks": len(new_ids)}))
        self.catalog.put_many([r for r, _ in records], journal=events)
        crashpoint("catalog_commit")

    def _payload(self, doc: SourceDocument, version: str, digest: str, i: int, c: TextChunk,
                 now: datetime) -> ChunkPayload:
        return ChunkPayload(
            tenant=self.tenant, source=doc.source, doc_id=doc.doc_id, uri=doc.uri, title=doc.title,
            section=c.section, page=c.page, element_types=tuple(c.element_types), chunk_index=i, version=version,
            content_hash=digest, modified_at=doc.modified_at, ingested_at=now, acl=doc.acl, text=c.text,
            metadata=typed_metadata(doc.source, doc.metadata, self.contracts) or None,
        )

    # -- ACL only -------------------------------------------------------------------------
    def set_acl(self, key: str, acl: Acl) -> None:
        """ACL-only change: payload update on every chunk, never a re-embed. Intent first, as for
        content: killed between the index and the catalog, the index would hold an ACL the
        catalog does not know, and a source reverting to the catalog's ACL would look unchanged
        forever; marked ``writing``, recover() removes the points and forces a re-ingest."""
        with self.catalog.write_lock([key]):
            row = self.catalog.get(key)
            if row is None:
                raise IngestError(f"unknown document {key}", code="not_found")
            before = _copy(row)
            state, pending = row.state, row.pending_ids
            row.state, row.pending_ids = DocState.WRITING, json.dumps(sorted(set(row.ids) | set(json.loads(pending))))
            self.catalog.put(row)
            self.index.set_payload(row.ids, acl_fields(acl))
            crashpoint("acl_update")
            row.acl_allow, row.acl_deny = dumps(acl.allow), dumps(acl.deny)
            row.state, row.pending_ids = state, pending
            self.catalog.put_many([row], journal=[change_event("acl_updated", tenant=self.tenant, source=row.source,
                                                               doc_id=row.doc_id, before=before, after=row)])

    # -- metadata only --------------------------------------------------------------------
    def update_metadata(self, key: str, doc: SourceDocument) -> str:
        """Same content, new descriptive fields (``modified_at``, title, uri, metadata) and maybe a
        new ACL: one payload update on every chunk, never a re-embed (the vectors keep the title
        they were embedded with until the content changes). Same intent → index → commit
        protocol as ``set_acl``. Returns ``acl_updated`` when the ACL changed too, else
        ``metadata_updated``; ``unchanged`` when another writer already made the row match."""
        with self.catalog.write_lock([key]):
            row = self.catalog.get(key)
            if row is None:
                raise IngestError(f"unknown document {key}", code="not_found")
            acl_changed = row.acl != doc.acl
            if not acl_changed and not metadata_differs(row, doc):
                return "unchanged"
            before = _copy(row)
            state, pending = row.state, row.pending_ids
            row.state, row.pending_ids = DocState.WRITING, json.dumps(sorted(set(row.ids) | set(json.loads(pending))))
            self.catalog.put(row)
            fields = descriptive_fields(uri=doc.uri, title=doc.title, modified_at=doc.modified_at,
                                        metadata=typed_metadata(doc.source, doc.metadata, self.contracts))
            if acl_changed:
                fields.update(acl_fields(doc.acl))
            self.index.set_payload(row.ids, fields)
            crashpoint("metadata_update")
            row.uri, row.title, row.modified_at = doc.uri, doc.title, doc.modified_at
            row.metadata_json = json.dumps(doc.metadata, sort_keys=True)
            row.acl_allow, row.acl_deny = dumps(doc.acl.allow), dumps(doc.acl.deny)
            row.state, row.pending_ids = state, pending
            outcome = "acl_updated" if acl_changed else "metadata_updated"
            changed = sorted(f for f, differs in (
                ("uri", before.uri != doc.uri), ("title", before.title != doc.title),
                ("modified_at", as_utc(before.modified_at) != as_utc(doc.modified_at)),
                ("metadata", before.metadata_dict != dict(doc.metadata))) if differs)
            self.catalog.put_many([row], journal=[change_event(outcome, tenant=self.tenant, source=row.source,
                                                               doc_id=row.doc_id, before=before, after=row,
                                                               detail={"fields": changed})])
            return outcome

    # -- deletes --------------------------------------------------------------------------
    def delete(self, key: str) -> bool:
        """Remove a document's chunks and row; False when there was none."""
        with self.catalog.write_lock([key]):
            row = self.catalog.get(key)
            if row is None:
                return False
            before = _copy(row)
            row.state = DocState.WRITING
            # with whatever an interrupted earlier write may have left (its pending ids)
            row.pending_ids = json.dumps(sorted(set(row.ids) | set(json.loads(row.pending_ids))))
            self.catalog.put(row)
            self.index.delete(json.loads(row.pending_ids))
            crashpoint("doc_delete")
            self.catalog.remove(row.key, journal=[change_event("deleted", tenant=self.tenant, source=row.source,
                                                               doc_id=row.doc_id, before=before, after=None)])
            return True

    # -- recovery -------------------------------------------------------------------------
    def recover(self) -> int:
        """Undo writes interrupted by a crash: remove their points and force a re-ingest."""
        fixed = 0
        for seen in list(self.catalog.documents()):
            if seen.state != DocState.WRITING:
                continue
            with self.catalog.write_lock([seen.key]):
                row = self.catalog.get(seen.key)  # a live writer may have finished it meanwhile
                if row is None or row.state != DocState.WRITING:
                    continue
                before = _copy(row)
                self.index.delete(sorted(set(json.loads(row.pending_ids)) | set(row.ids)))
                crashpoint("recover")
                row.state, row.point_ids, row.pending_ids, row.content_hash = DocState.INDEXED, "[]", "[]", ""
                self.catalog.put_many([row], journal=[change_event("recovered", tenant=self.tenant, source=row.source,
                                                                   doc_id=row.doc_id, before=before, after=row)])
                fixed += 1
        return fixed


def metadata_differs(row: DocumentRow, doc: SourceDocument) -> bool:
    """Whether ``doc`` describes the document differently from its catalog row (same content)."""
    return (row.uri != doc.uri or row.title != doc.title or as_utc(row.modified_at) != as_utc(doc.modified_at)
            or row.metadata_dict != dict(doc.metadata))


def _copy(row: DocumentRow) -> DocumentRow:
    """A detached snapshot of a row (the ``before`` of a write event)."""
    return DocumentRow(**row.model_dump())
