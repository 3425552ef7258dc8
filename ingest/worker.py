"""Queued ingestion: ``enqueue_folder`` lists a filesystem source into the work queue (one item
per document, plus a delete for every document that vanished); ``run_worker`` claims batches,
runs them through the normal ``Ingestor`` and records each outcome on its item."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from core.errors import ClearanceError
from core.types import SourceDocument
from ingest.pipeline import Ingestor
from ingest.plan import check_deletes, keys_to_delete
from ingest.sources import FilesystemSource, read_regular
from store.queue import Enqueued, QueueRow, WorkQueue


def enqueue_folder(queue: WorkQueue, tenant: str, root: Path, source: str | None = None, *,
                   max_delete_fraction: float = 1.0, allow_deletes: bool = True) -> int:
    """Needs only the catalog, never the index, so it works while another process owns it. The
    manifest is checked and the mass-delete guard applied (``ingest.plan``) before anything is
    queued."""
    src = FilesystemSource(root, source, tenant=tenant)
    holds, gone = keys_to_delete(queue.catalog, tenant, src.name, src.doc_ids())
    check_deletes(src.name, holds, len(gone), max_delete_fraction, allow_deletes)
    job = queue.catalog.start_job(src.name, kind="queued")
    items, seen = [], set()
    for rel, path in src.files():
        seen.add(rel)
        items.append(Enqueued("upsert", rel, str(path), src.manifest.acl_for(rel)))
    for row in queue.catalog.documents(tenant, src.name):
        if row.doc_id not in seen:
            items.append(Enqueued("delete", row.doc_id))
    queue.enqueue(int(job.id or 0), src.name, items)
    return int(job.id or 0)


def _load(row: QueueRow) -> SourceDocument:
    path = Path(row.path)
    try:
        content, mtime = read_regular(path)
    except ClearanceError as exc:
        raise ClearanceError(f"{row.doc_id}: {exc.message}", code=exc.code) from exc
    return SourceDocument(row.source, row.doc_id, path.as_uri(), path.name, content, row.acl,
                          datetime.fromtimestamp(mtime, UTC), title=path.stem.replace("-", " ").replace("_", " "))


def process(ingestor: Ingestor, queue: WorkQueue, rows: list[QueueRow]) -> None:
    docs: list[tuple[QueueRow, SourceDocument]] = []
    for row in rows:
        if row.op == "delete":
            try:
                ingestor.delete(row.source, row.doc_id)
                queue.finish(row, outcome="deleted")
            except ClearanceError as exc:
                queue.finish(row, error=(exc.code, exc.message))
            continue
        try:
            docs.append((row, _load(row)))
        except ClearanceError as exc:
            queue.finish(row, error=(exc.code, exc.message))
    def done(i: int, res: tuple[str, int] | ClearanceError, _ms: float) -> None:
        row = docs[i][0]  # finished as soon as its document is committed, not after the batch
        if isinstance(res, ClearanceError):
            queue.finish(row, error=(res.code, res.message))
        else:
            queue.finish(row, outcome=res[0])

    ingestor.apply_many([d for _, d in docs], on_result=done)


def run_worker(ingestor: Ingestor, queue: WorkQueue, worker_id: str, *, batch: int = 16, lease_s: float = 300.0,
               once: bool = False, idle_s: float = 1.0, stop: threading.Event | None = None) -> int:
    """Process queued items until the queue is empty (``once``) or ``stop`` is set."""
    ingestor.catalog.interrupt_orphaned_jobs()  # sync jobs of processes that died are not running
    done = 0
    while stop is None or not stop.is_set():
        rows = queue.claim(worker_id, batch, lease_s)
        if not rows:
            if once:
                break
            time.sleep(idle_s)
            continue
        process(ingestor, queue, rows)
        done += len(rows)
    if done:
        ingestor.index.optimize()
    return done
