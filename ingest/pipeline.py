"""Ingestion: source documents → parsed, chunked, embedded points in the index, recorded in the
catalog. Idempotent and incremental:

- unchanged content and ACL: no-op;
- ACL-only change: payload update, no parse, no embedding, visible to the next search;
- same content, new ``modified_at``/title/uri/metadata: payload update (``metadata_updated``),
  no parse, no embedding; freshness and date filters see the new date;
- changed content: chunks replaced (deterministic ids; leftovers deleted);
- gone from the source listing: chunks and catalog row deleted, unless that would delete more
  than ``ingest.max_delete_fraction`` of the source or all of it (``ingest.plan``): then the
  sync does nothing and says why, unless the caller allowed deletes.

Every result of ``apply``/``apply_many`` carries the document's chunk count whatever the
outcome (what PUT answers); job reports count only chunks written.

Crash safety: every write goes through ``IndexWriter`` (``ingest.writer``), which records the
intent before touching the index; ``recover()`` undoes interrupted writes, so a kill at any
point leaves no orphaned, duplicated or half-updated chunks once recovery runs.
A bad document records a per-document error code and the job goes on.

Observability: every outcome is counted (``clearance_ingest_documents_total``, failures by code
in ``clearance_parse_errors_total``) when a ``Metrics`` is given, and each sync job's end is
recorded per source in the catalog (time, success, and the root of a filesystem source, which
``POST /v1/admin/sources/{source}/resync`` reads back).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from core.errors import ClearanceError, IngestError
from core.metrics import Metrics
from core.settings import IngestSettings
from core.types import Acl, SourceDocument
from ingest.chunking import TextChunk, chunk_document
from ingest.crashpoints import crashpoint
from ingest.manifest import ManifestError
from ingest.plan import check_deletes, keys_to_delete
from ingest.sandbox import parse_isolated
from ingest.sources import DocumentSource, content_hash
from ingest.writer import ContentWrite, IndexWriter, metadata_differs
from retrieval.bm25 import Bm25Encoder
from retrieval.embedder import Embedder
from retrieval.index import ChunkIndex
from retrieval.payload import doc_key
from store.audit import set_job
from store.catalog import Catalog, DocState, DocumentRow, JobItemRow, JobOwner, JobRow, JobState, utcnow

Progress = Callable[[str, str], None]  # (doc_key, outcome)
Settled = Callable[[int, "tuple[str, int] | ClearanceError", float], None]  # (index in the batch, result, ms)


@dataclass
class _Parsed:
    """A document parsed and chunked, waiting for its slice to be embedded and written."""

    i: int  # index in the batch
    key: str
    digest: str
    chunks: list[TextChunk]
    row: DocumentRow | None
    ms: float  # time spent preparing it


@dataclass
class JobReport:
    job_id: int
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (doc, code, message)
    chunks: int = 0  # chunks written
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # e.g. files no principal can read
    mass_delete: bool = False  # deleted beyond the guard because the caller allowed it

    def as_dict(self) -> dict:
        """The job summary the API and CLI return."""
        return {"job_id": self.job_id, "counts": self.counts, "chunks": self.chunks,
                "errors": [{"doc": d, "code": c, "message": m} for d, c, m in self.errors],
                "warnings": self.warnings, "mass_delete": self.mass_delete, "seconds": round(self.seconds, 3)}


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
        self.writer = IndexWriter(settings.tenant, catalog, index, bm25, settings.contracts,
                                  upsert_points=settings.batch_chunks)

    def doc_key(self, source: str, doc_id: str) -> str:
        return doc_key(self.settings.tenant, source, doc_id)

    # -- jobs -----------------------------------------------------------------------------
    def sync(self, source: DocumentSource, progress: Progress | None = None, full: bool = True,
             batch_docs: int | None = None, *, allow_deletes: bool = False) -> JobReport:
        """Bring the index in line with a source's full listing; one bad document fails alone.

        Refused before anything is written: a manifest naming another tenant
        (``manifest_invalid``), and a full sync the mass-delete guard stops
        (``mass_delete_refused``) unless ``allow_deletes``."""
        manifest = getattr(source, "manifest", None)
        theirs = getattr(manifest, "tenant", None)
        if theirs is not None and theirs != self.settings.tenant:
            raise ManifestError(getattr(manifest, "path", None) or source.name,
                                [f"tenant {theirs!r} is not this deployment's tenant {self.settings.tenant!r}"])
        mass_delete = False
        if full:
            holds, gone = keys_to_delete(self.catalog, self.settings.tenant, source.name, source.doc_ids())
            mass_delete = check_deletes(source.name, holds, len(gone), self.settings.max_delete_fraction, allow_deletes)
        if hasattr(source, "max_file_bytes") and source.max_file_bytes is None:
            source.max_file_bytes = self.settings.max_file_bytes  # refused unread, never held
        self.recover()
        self.catalog.interrupt_orphaned_jobs()  # jobs of processes that died are not running
        started = time.perf_counter()
        job = self.catalog.start_job(source.name, owner=JobOwner.current())
        set_job(job.id)
        root = getattr(source, "root", None)
        try:
            report = self._sync(source, job, progress, full, batch_docs or self.settings.batch_docs, started)
        except Exception as exc:
            try:
                job.state, job.finished_at = JobState.FAILED, utcnow()
                self.catalog.save_job(job, [])
                self.catalog.record_sync(source.name, job_id=job.id, ok=False, root=str(root) if root else None,
                                         error=f"{type(exc).__name__}: {exc}")
            except Exception:  # the catalog itself may be what failed; the original error matters
                pass
            raise
        self.catalog.record_sync(source.name, job_id=job.id, ok=True, root=str(root) if root else None,
                                 at=job.finished_at)
        report.mass_delete = mass_delete
        return report

    def _sync(self, source: DocumentSource, job: JobRow, progress: Progress | None, full: bool, batch_docs: int,
              started: float) -> JobReport:
        """Streams: a batch is flushed once it holds ``batch_docs`` documents or ``batch_bytes`` of
        content; within it documents are parsed one at a time and embedded and written in slices
        of at most ``batch_chunks`` chunks (``apply_many``), each document recorded (and
        ``progress`` called) as soon as its slice is committed. The job row's counts and items
        are saved after each batch, so ``clearance jobs`` shows a long job advancing."""
        job_id = int(job.id or 0)
        report = JobReport(job_id=job_id)
        items: list[JobItemRow] = []
        seen: set[str] = set()
        batch: list[SourceDocument] = []
        held = 0  # content bytes in the batch

        def flush() -> None:
            nonlocal held
            if not batch:
                return

            def done(i: int, res: tuple[str, int] | ClearanceError, ms: float) -> None:
                doc = batch[i]
                items.append(self._record(job_id, self.doc_key(doc.source, doc.doc_id), res, ms, report, progress))

            self.apply_many(batch, on_result=done)
            batch.clear()
            held = 0
            self._save_progress(job, report, items)

        for doc in source.documents():
            seen.add(self.doc_key(doc.source, doc.doc_id))
            batch.append(doc)
            held += len(doc.content)
            if len(batch) >= (batch_docs or self.settings.batch_docs) or held >= self.settings.batch_bytes:
                flush()
        flush()
        # Files the listing refused (links out of the root, FIFOs, devices): one code each.
        for skip in getattr(source, "skipped", []):
            err = IngestError(skip.message, code=skip.code)
            if skip.code == "too_large":  # still in the listing: an indexed older version stays
                seen.add(self.doc_key(source.name, skip.rel))
            items.append(self._record(job_id, self.doc_key(source.name, skip.rel), err, 0.0, report, progress))
            self._observe(source.name, "failed", skip.code)
        report.warnings = list(getattr(source, "warnings", lambda: [])())
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
        job.state = JobState.DONE
        job.finished_at = utcnow()
        self._save_progress(job, report, items)
        self.index.optimize()
        report.seconds = time.perf_counter() - started
        return report

    def _save_progress(self, job: JobRow, report: JobReport, items: list[JobItemRow]) -> None:
        """The job's counts so far and the items not saved yet (``items`` is emptied)."""
        for outcome, n in report.counts.items():
            if hasattr(job, outcome):
                setattr(job, outcome, n)
        job.chunks = report.chunks
        self.catalog.save_job(job, items)
        items.clear()

    @staticmethod
    def _record(job_id: int, key: str, res: tuple[str, int] | ClearanceError, ms: float, report: JobReport,
                progress: Progress | None) -> JobItemRow:
        if isinstance(res, ClearanceError):
            outcome, chunks = "failed", 0
            report.errors.append((key, res.code, res.message))
            item = JobItemRow(job_id=job_id, doc_key=key, outcome=outcome, error_code=res.code,
                              error_message=res.message[:1000], duration_ms=ms)
        else:
            outcome, chunks = res
            chunks = chunks if outcome in ("added", "updated") else 0  # chunks written, not held
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
        """Bring the index and catalog in line with ``doc``. Returns (outcome, the document's
        chunk count after the write)."""
        res = self.apply_many([doc])[0]
        if isinstance(res, ClearanceError):
            raise res
        return res

    def apply_many(self, docs: list[SourceDocument], *, on_result: Settled | None = None,
                   ) -> list[tuple[str, int] | ClearanceError]:
        """Several documents; each result is an outcome or its error. Documents are parsed one at
        a time and embedded and written in slices of at most ``ingest.batch_chunks`` chunks (a
        document with more is a slice of its own, embedded ``batch_chunks`` at a time), so what
        is held at once is bounded by the settings, not by the number of documents. Each
        document is settled (``on_result(index, result, ms)``) as soon as it is committed."""
        results: list[tuple[str, int] | ClearanceError] = [("unchanged", 0)] * len(docs)

        def settle(i: int, res: tuple[str, int] | ClearanceError, ms: float) -> None:
            results[i] = res
            if isinstance(res, ClearanceError):  # every path in (sync, push, worker) is counted here
                self._observe(docs[i].source, "failed", res.code)
            else:
                self._observe(docs[i].source, res[0], None)
            if on_result is not None:
                on_result(i, res, ms)

        self._apply_many(docs, settle)
        return results

    def _apply_many(self, docs: list[SourceDocument], settle: Settled) -> None:
        pending: list[_Parsed] = []
        keys: set[str] = set()
        size = 0
        cap = self.settings.batch_chunks
        for i, doc in enumerate(docs):
            key = self.doc_key(doc.source, doc.doc_id)
            if key in keys:  # the same document twice would race with itself: the first goes first
                self._write_slice(docs, pending, settle)
                pending, keys, size = [], set(), 0
            t0 = time.perf_counter()
            try:
                prepared = self._prepare(doc)
            except ClearanceError as exc:
                settle(i, exc, (time.perf_counter() - t0) * 1000)
                continue
            if isinstance(prepared[0], str) and isinstance(prepared[1], int) and len(prepared) == 2:
                settle(i, prepared, (time.perf_counter() - t0) * 1000)  # type: ignore[arg-type]
                continue  # settled without parsing: (outcome, chunks the document holds)
            _, digest, chunks, row = prepared  # type: ignore[misc]
            if pending and size + len(chunks) > cap:
                self._write_slice(docs, pending, settle)
                pending, keys, size = [], set(), 0
            pending.append(_Parsed(i, key, digest, chunks, row, (time.perf_counter() - t0) * 1000))
            keys.add(key)
            size += len(chunks)
            if size >= cap:
                self._write_slice(docs, pending, settle)
                pending, keys, size = [], set(), 0
        self._write_slice(docs, pending, settle)

    def _write_slice(self, docs: list[SourceDocument], todo: list[_Parsed], settle: Settled) -> None:
        """Embed and write one slice (distinct keys), then settle each of its documents."""
        if not todo:
            return
        t0 = time.perf_counter()
        texts = [[self._embed_text(docs[p.i], c) for c in p.chunks] for p in todo]
        flat = [t for group in texts for t in group]
        step = self.settings.batch_chunks
        try:
            parts = [self.embedder.embed(flat[k:k + step]) for k in range(0, len(flat), step)]
            vectors = np.concatenate(parts) if len(parts) != 1 else parts[0]
        except Exception as exc:  # the model failing fails these documents, not the job
            err = IngestError(f"embedding failed: {type(exc).__name__}: {exc}"[:500], code="embed_failed")
            share = (time.perf_counter() - t0) * 1000 / len(todo)
            for p in todo:
                settle(p.i, err, p.ms + share)
            return
        crashpoint("embed")
        writes, offset = [], 0
        for p, group in zip(todo, texts):
            writes.append(ContentWrite(docs[p.i], p.key, p.digest, p.chunks, group, vectors[offset:offset + len(group)]))
            offset += len(group)
        del texts, flat, parts
        res: list[tuple[str, int] | ClearanceError]
        try:
            self.writer.write(writes)
            res = [("updated" if p.row is not None else "added", len(p.chunks)) for p in todo]
        except ClearanceError as exc:  # the index or catalog failed: recover() undoes the slice
            res = [exc] * len(todo)
        share = (time.perf_counter() - t0) * 1000 / len(todo)
        for p, r in zip(todo, res):
            settle(p.i, r, p.ms + share)

    def _prepare(self, doc: SourceDocument) -> tuple[str, int] | tuple[str, str, list[TextChunk], DocumentRow | None]:
        """No-op, ACL-only and metadata-only outcomes are settled here (outcome, chunks held);
        otherwise the parsed chunks."""
        if len(doc.content) > self.settings.max_file_bytes:
            raise IngestError(f"file exceeds {self.settings.max_file_bytes} bytes", code="too_large")
        key = self.doc_key(doc.source, doc.doc_id)
        digest = content_hash(doc.content)
        row = self.catalog.get(key)
        if row is not None and row.state == DocState.INDEXED and row.content_hash == digest:
            held = len(row.ids)
            if metadata_differs(row, doc):
                return self.writer.update_metadata(key, doc), held
            if row.acl == doc.acl:
                return "unchanged", held
            self.set_acl(key, doc.acl)
            return "acl_updated", held
        try:
            chunks = chunk_document(parse_isolated(doc.filename, doc.content, self.settings), self.settings,
                                    input_bytes=len(doc.content))
        except IngestError:
            if row is not None and row.acl != doc.acl:
                self.set_acl(key, doc.acl)  # permissions propagate even when new content is bad
            raise
        crashpoint("parse")
        return key, digest, chunks, row

    @staticmethod
    def _embed_text(doc: SourceDocument, c: TextChunk) -> str:
        head = " — ".join(x for x in (doc.title, c.section) if x)
        return f"{head}\n{c.text}" if head else c.text

    def set_acl(self, key: str, acl: Acl) -> None:
        """ACL-only change (``IndexWriter.set_acl``): payload update, never a re-embed."""
        self.writer.set_acl(key, acl)

    def delete(self, source: str, doc_id: str) -> bool:
        if not self.writer.delete(self.doc_key(source, doc_id)):
            return False
        self._observe(source, "deleted", None)
        return True

    def _delete_key(self, key: str) -> tuple[str, int]:
        self.writer.delete(key)
        return "deleted", 0

    def recover(self) -> int:
        """Undo writes interrupted by a crash (``IndexWriter.recover``)."""
        return self.writer.recover()
