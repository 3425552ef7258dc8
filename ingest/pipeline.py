"""Ingestion: source documents → parsed, chunked, embedded points in the index, recorded in the
catalog. Idempotent and incremental:

- unchanged content and ACL: no-op;
- ACL-only change: payload update, no parse, no embedding, visible to the next search;
- changed content: chunks replaced (deterministic ids; leftovers deleted);
- gone from the source listing: chunks and catalog row deleted.

Crash safety: before touching the index a document row is marked ``writing`` with every id
the write may touch; ``recover()`` removes those points and forces a re-ingest, so a kill at
any point leaves no orphaned, duplicated or half-updated chunks once recovery runs.
A bad document records a per-document error code and the job goes on.

Observability: every outcome is counted (``clearance_ingest_documents_total``, failures by code
in ``clearance_parse_errors_total``) when a ``Metrics`` is given, and each sync job's end is
recorded per source in the catalog (time, success, and the root of a filesystem source, which
``POST /v1/admin/sources/{source}/resync`` reads back).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

import numpy as np

from core.errors import ClearanceError, IngestError
from core.metrics import Metrics
from core.settings import IngestSettings
from core.types import Acl, SourceDocument
from ingest.catalog import Catalog, DocumentRow, JobItemRow, JobRow, dumps, utcnow
from ingest.chunking import TextChunk, chunk_elements
from ingest.crashpoints import crashpoint
from ingest.sandbox import parse_isolated
from ingest.sources import DocumentSource, content_hash
from retrieval.bm25 import Bm25Encoder
from retrieval.embedder import Embedder
from retrieval.index import ChunkIndex, IndexPoint

_NAMESPACE = uuid.UUID("6f1c2a9e-3d5b-4c1e-9a7f-0b8e2d4c6a10")

Progress = Callable[[str, str], None]  # (doc_key, outcome)


def point_id(doc_key: str, chunk_index: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{doc_key}#{chunk_index}"))


@dataclass
class JobReport:
    job_id: int
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (doc, code, message)
    chunks: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        """The job summary the API and CLI return."""
        return {"job_id": self.job_id, "counts": self.counts, "chunks": self.chunks,
                "errors": [{"doc": d, "code": c, "message": m} for d, c, m in self.errors],
                "seconds": round(self.seconds, 3)}


class Ingestor:
    def __init__(
        self, settings: IngestSettings, catalog: Catalog, index: ChunkIndex, embedder: Embedder, bm25: Bm25Encoder,
        *, metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.index = index
        self.embedder = embedder
        self.bm25 = bm25
        self.metrics = metrics

    def doc_key(self, source: str, doc_id: str) -> str:
        return f"{self.settings.tenant}/{source}/{doc_id}"

    # -- jobs -----------------------------------------------------------------------------
    def sync(self, source: DocumentSource, progress: Progress | None = None, full: bool = True,
             batch_docs: int | None = None) -> JobReport:
        """Bring the index in line with a source's full listing; one bad document fails alone."""
        self.recover()
        started = time.perf_counter()
        job = self.catalog.start_job(source.name)
        root = getattr(source, "root", None)
        try:
            report = self._sync(source, job, progress, full, batch_docs, started)
        except Exception as exc:
            try:
                self.catalog.record_sync(source.name, job_id=job.id, ok=False, root=str(root) if root else None,
                                         error=f"{type(exc).__name__}: {exc}")
            except Exception:  # the catalog itself may be what failed; the original error matters
                pass
            raise
        self.catalog.record_sync(source.name, job_id=job.id, ok=True, root=str(root) if root else None,
                                 at=job.finished_at)
        return report

    def _sync(self, source: DocumentSource, job: JobRow, progress: Progress | None, full: bool, batch_docs: int,
              started: float) -> JobReport:
        job_id = int(job.id or 0)
        report = JobReport(job_id=job_id)
        items: list[JobItemRow] = []
        seen: set[str] = set()
        batch: list[SourceDocument] = []

        def flush() -> None:
            t0 = time.perf_counter()
            results = self.apply_many(batch)
            per_doc_ms = (time.perf_counter() - t0) * 1000 / max(len(batch), 1)
            for doc, res in zip(batch, results):
                items.append(self._record(job_id, self.doc_key(doc.source, doc.doc_id), res, per_doc_ms, report, progress))
            batch.clear()

        for doc in source.documents():
            seen.add(self.doc_key(doc.source, doc.doc_id))
            batch.append(doc)
            if len(batch) >= (batch_docs or self.settings.batch_docs):
                flush()
        flush()
        if full:
            for row in list(self.catalog.documents(self.settings.tenant, source.name)):
                if row.key not in seen:
                    t0 = time.perf_counter()
                    try:
                        res: tuple[str, int] | ClearanceError = self._delete_key(row.key)
                    except ClearanceError as exc:
                        res = exc
                    items.append(self._record(job_id, row.key, res, (time.perf_counter() - t0) * 1000, report, progress))
                    self._observe(source.name, items[-1].outcome, items[-1].error_code)
        job.state = "done"
        job.finished_at = utcnow()
        for outcome, n in report.counts.items():
            if hasattr(job, outcome):
                setattr(job, outcome, n)
        job.chunks = report.chunks
        self.catalog.save_job(job, items)
        self.index.optimize()
        report.seconds = time.perf_counter() - started
        return report

    @staticmethod
    def _record(job_id: int, key: str, res: "tuple[str, int] | ClearanceError", ms: float, report: JobReport,
                progress: Progress | None) -> JobItemRow:
        if isinstance(res, ClearanceError):
            outcome, chunks = "failed", 0
            report.errors.append((key, res.code, res.message))
            item = JobItemRow(job_id=job_id, doc_key=key, outcome=outcome, error_code=res.code,
                              error_message=res.message[:1000], duration_ms=ms)
        else:
            outcome, chunks = res
            item = JobItemRow(job_id=job_id, doc_key=key, outcome=outcome, chunks=chunks, duration_ms=ms)
        report.counts[outcome] = report.counts.get(outcome, 0) + 1
        report.chunks += chunks
        if progress is not None:
            progress(key, outcome)
        return item

    def _observe(self, source: str, outcome: str, error_code: str | None) -> None:
        if self.metrics is not None:
            self.metrics.ingested(source, outcome, error_code)

    # -- documents ------------------------------------------------------------------------
    def apply(self, doc: SourceDocument) -> tuple[str, int]:
        """Bring the index and catalog in line with ``doc``. Returns (outcome, chunks written)."""
        res = self.apply_many([doc])[0]
        if isinstance(res, ClearanceError):
            raise res
        return res

    def apply_many(self, docs: list[SourceDocument]) -> "list[tuple[str, int] | ClearanceError]":
        """Several documents, embedded in one batch; each result is an outcome or its error."""
        results = self._apply_many(docs)
        for doc, res in zip(docs, results):  # every path in (sync, push, worker) is counted here
            if isinstance(res, ClearanceError):
                self._observe(doc.source, "failed", res.code)
            else:
                self._observe(doc.source, res[0], None)
        return results

    def _apply_many(self, docs: list[SourceDocument]) -> "list[tuple[str, int] | ClearanceError]":
        results: list[tuple[str, int] | ClearanceError] = [("unchanged", 0)] * len(docs)
        todo: list[tuple[int, str, str, list[TextChunk], DocumentRow | None]] = []
        for i, doc in enumerate(docs):
            try:
                prepared = self._prepare(doc)
            except ClearanceError as exc:
                results[i] = exc
                continue
            if isinstance(prepared, str):
                results[i] = (prepared, 0)
            else:
                todo.append((i, *prepared))
        if not todo:
            return results
        # The same document twice in one batch would race with itself: later copies go next.
        seen: set[str] = set()
        keep, later = [], []
        for t in todo:
            (later if t[1] in seen else keep).append(t)
            seen.add(t[1])
        todo = keep
        texts = [[self._embed_text(docs[i], c) for c in chunks] for i, _, _, chunks, _ in todo]
        try:
            vectors = self.embedder.embed([t for group in texts for t in group])
        except Exception as exc:  # the model failing fails these documents, not the job
            err = IngestError(f"embedding failed: {type(exc).__name__}: {exc}"[:500], code="embed_failed")
            for i, *_ in todo:
                results[i] = err
            return results
        crashpoint("embed")
        try:
            self._write_batch(docs, todo, texts, vectors)
            for i, _, _, chunks, row in todo:
                results[i] = ("updated" if row is not None else "added", len(chunks))
        except ClearanceError as exc:  # the index or catalog failed: recover() undoes the batch
            for i, *_ in todo:
                results[i] = exc
        if later:
            redo = self._apply_many([docs[i] for i, *_ in later])
            for (i, *_), res in zip(later, redo):
                results[i] = res
        return results

    def _prepare(self, doc: SourceDocument) -> "str | tuple[str, str, list[TextChunk], DocumentRow | None]":
        """No-op and ACL-only outcomes are settled here; otherwise the parsed chunks."""
        if len(doc.content) > self.settings.max_file_bytes:
            raise IngestError(f"file exceeds {self.settings.max_file_bytes} bytes", code="too_large")
        key = self.doc_key(doc.source, doc.doc_id)
        digest = content_hash(doc.content)
        row = self.catalog.get(key)
        if row is not None and row.state == "indexed" and row.content_hash == digest:
            if row.acl == doc.acl:
                return "unchanged"
            self.set_acl(key, doc.acl)
            return "acl_updated"
        try:
            chunks = chunk_elements(
                parse_isolated(doc.filename, doc.content, self.settings),
                max_chars=self.settings.chunk_chars,
                overlap_chars=self.settings.chunk_overlap_chars,
            )
        except IngestError:
            if row is not None and row.acl != doc.acl:
                self.set_acl(key, doc.acl)  # permissions propagate even when new content is bad
            raise
        crashpoint("parse")
        return key, digest, chunks, row

    def _write_batch(self, docs: list[SourceDocument], todo: list, texts: list[list[str]], dense: "np.ndarray") -> None:
        """Write a batch: intents (one commit), points (one upsert), leftovers (one delete),
        then the rows marked indexed (one commit). A crash between any two steps leaves rows
        in ``writing`` with every id they may have touched, which recover() removes."""
        with self.catalog.write_lock([t[1] for t in todo]):
            # The rows as they are now, under the lock: another writer (a PATCH, a delete) may
            # have changed them since _prepare read them.
            current = self.catalog.get_many([t[1] for t in todo])
            self._write_locked(docs, [(i, key, digest, chunks, current.get(key)) for i, key, digest, chunks, _ in todo],
                               texts, dense)

    def _write_locked(self, docs: list[SourceDocument], todo: list, texts: list[list[str]], dense: "np.ndarray") -> None:
        now = utcnow()
        records, points, stale = [], [], []
        offset = 0
        for (i, key, digest, chunks, row), group in zip(todo, texts):
            doc = docs[i]
            new_ids = [point_id(key, n) for n in range(len(chunks))]
            old_ids = row.ids if row is not None else []
            # A row still ``writing`` (a write died and no recover() ran since, as on the push and
            # worker paths) may have points beyond its ids, in its pending ids: leftovers too.
            left = sorted(set(old_ids) | set(json.loads(row.pending_ids))) if row is not None else []
            version = digest[:16]
            records.append((DocumentRow(
                key=key, tenant=self.settings.tenant, source=doc.source, doc_id=doc.doc_id, uri=doc.uri,
                title=doc.title, version=version, content_hash=digest, acl_allow=dumps(doc.acl.allow),
                acl_deny=dumps(doc.acl.deny), modified_at=doc.modified_at, ingested_at=now, state="writing",
                point_ids=json.dumps(old_ids), pending_ids=json.dumps(sorted(set(left) | set(new_ids))),
            ), new_ids))
            vecs = dense[offset:offset + len(group)]
            offset += len(group)
            points += [IndexPoint(pid, vec.tolist(), self.bm25.encode_document(text),
                                  self._payload(key, doc, version, digest, n, c, now))
                       for n, (pid, vec, text, c) in enumerate(zip(new_ids, vecs, group, chunks))]
            stale += sorted(set(left) - set(new_ids))
        # Intent first: a crash after this line is undone by recover().
        self.catalog.put_many([r for r, _ in records])
        crashpoint("catalog_intent")
        self.index.upsert(points)
        crashpoint("index_upsert")
        self.index.delete(stale)
        crashpoint("stale_delete")
        for record, new_ids in records:
            record.state, record.point_ids, record.pending_ids = "indexed", json.dumps(new_ids), "[]"
        self.catalog.put_many([r for r, _ in records])
        crashpoint("catalog_commit")

    @staticmethod
    def _embed_text(doc: SourceDocument, c: TextChunk) -> str:
        head = " — ".join(x for x in (doc.title, c.section) if x)
        return f"{head}\n{c.text}" if head else c.text

    def _payload(self, key: str, doc: SourceDocument, version: str, digest: str, i: int, c: TextChunk,
                 now: datetime) -> dict:
        return {
            "tenant": self.settings.tenant, "source": doc.source, "doc_id": doc.doc_id, "doc_key": key,
            "uri": doc.uri, "title": doc.title, "section": c.section, "page": c.page,
            "element_types": list(c.element_types), "chunk_index": i, "version": version,
            "content_hash": digest, "modified_at": doc.modified_at.isoformat(),
            "modified_ts": doc.modified_at.timestamp(), "ingested_at": now.isoformat(),
            "acl_allow": sorted(doc.acl.allow), "acl_deny": sorted(doc.acl.deny), "text": c.text,
        }

    def set_acl(self, key: str, acl: Acl) -> None:
        """ACL-only change: payload update on every chunk, never a re-embed. Intent first, as for
        content: killed between the index and the catalog, the index would hold an ACL the
        catalog does not know, and a source reverting to the catalog's ACL would look unchanged
        forever; marked ``writing``, recover() removes the points and forces a re-ingest."""
        with self.catalog.write_lock([key]):
            self._set_acl_locked(key, acl)

    def _set_acl_locked(self, key: str, acl: Acl) -> None:
        row = self.catalog.get(key)
        if row is None:
            raise IngestError(f"unknown document {key}", code="not_found")
        state, pending = row.state, row.pending_ids
        row.state, row.pending_ids = "writing", json.dumps(sorted(set(row.ids) | set(json.loads(pending))))
        self.catalog.put(row)
        self.index.set_payload(row.ids, {"acl_allow": sorted(acl.allow), "acl_deny": sorted(acl.deny)})
        crashpoint("acl_update")
        row.acl_allow, row.acl_deny = dumps(acl.allow), dumps(acl.deny)
        row.state, row.pending_ids = state, pending
        self.catalog.put(row)

    def delete(self, source: str, doc_id: str) -> bool:
        key = self.doc_key(source, doc_id)
        with self.catalog.write_lock([key]):
            row = self.catalog.get(key)
            if row is None:
                return False
            self._delete_row(row)
        self._observe(source, "deleted", None)
        return True

    def _delete_key(self, key: str) -> tuple[str, int]:
        with self.catalog.write_lock([key]):
            row = self.catalog.get(key)
            return self._delete_row(row) if row is not None else ("deleted", 0)

    def _delete_row(self, row: DocumentRow) -> tuple[str, int]:
        row.state = "writing"
        # with whatever an interrupted earlier write may have left (its pending ids)
        row.pending_ids = json.dumps(sorted(set(row.ids) | set(json.loads(row.pending_ids))))
        self.catalog.put(row)
        self.index.delete(json.loads(row.pending_ids))
        crashpoint("doc_delete")
        self.catalog.remove(row.key)
        return "deleted", 0

    def recover(self) -> int:
        """Undo writes interrupted by a crash: remove their points and force a re-ingest."""
        fixed = 0
        for seen in list(self.catalog.documents()):
            if seen.state != "writing":
                continue
            with self.catalog.write_lock([seen.key]):
                row = self.catalog.get(seen.key)  # a live writer may have finished it meanwhile
                if row is None or row.state != "writing":
                    continue
                self.index.delete(sorted(set(json.loads(row.pending_ids)) | set(row.ids)))
                crashpoint("recover")
                row.state, row.point_ids, row.pending_ids, row.content_hash = "indexed", "[]", "[]", ""
                self.catalog.put(row)
                fixed += 1
        return fixed

