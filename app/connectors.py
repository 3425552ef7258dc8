"""The connector sync engine: sources of kind ``connector`` brought into the index through the
normal write path (``ingest.pipeline.Ingestor``), with the connector only *reading* its source.

Two runs per source, each resumable from the checkpoint stored for its stream
(``store.connectors``):

- ``run_content``: ``documents(since)`` → identity map → ``SourceDocument`` → ``apply_many`` in
  bounded batches (``scheduler.batch_docs``; one bad document fails alone and is reported); the
  connector's checkpoint is stored only after every document before it committed (a document
  that failed for a transient reason, such as the embedder, holds it back so the next run retries
  it). Then deletions: what the catalog holds and ``listing()`` lacks is deleted, through the
  mass-delete guard (``ingest.max_delete_fraction``); a refused mass delete fails the run
  (``mass_delete_refused``, visible in the status, metrics and /readyz), nothing is deleted, but
  every vanished document is made private first (``Acl.private()``, audited): documents leave a
  listing when access is withdrawn upstream, and must not keep their old readers meanwhile.
  A content run that added or updated a document resets the permission checkpoint: it wrote
  ACLs the permission stream's fingerprints know nothing of (a change undone before the next
  permission run would otherwise be missed for good, a revocation lost).
- ``run_permissions``: ``permissions(since)`` → identity map → ``Ingestor.set_acl`` per document
  whose ACL changed: a payload update, never the embedder. A document the catalog does not hold
  yet is skipped (its content run brings it with its ACL, and resets this checkpoint). Then any
  catalog document absent from ``listing()`` is made private (deleting stays the content run's
  job, under the guard). The checkpoint is stored with the identity map's fingerprint
  (``IdentityMap.fingerprint``): a changed map or directory maps every ACL again.
- Transient document failures (``retryable``: an unavailable backend, any 5xx, the embedder
  failing) hold a checkpoint back; the lock is re-checked (``renew``) before every checkpoint
  save and before deletions: a run that lost it fails (``sync_lease_lost``), saving nothing.
- Before each run the config ``root`` of an API-created source is checked again against
  ``ingest.allowed_roots`` and the folder it resolved to at creation (``check_root``).
- Size bounds (``max_file_bytes``, ``max_message_bytes``) default to and are capped at
  ``ingest.max_file_bytes`` (``capped_config``); what a connector left unread (its ``skipped``)
  is counted in the report and the status (the first 20 listed).
- A connector speaks for its own ``namespace`` only (other identities are unmapped: reported,
  granting nothing); only the ``filesystem`` connector passes ``clearance`` principals through.

Guarantees:

- Writes are attributed in the write audit to the system actor ``connector:<source>`` (issuer
  ``clearance``) with actions ``connector_content`` / ``connector_permissions``, each document
  change with its ACL before and after (the ACL history); each run ends with one
  ``connector_sync`` event with its report. Connector sources are created only by an admin
  (``app.sources``) and cannot be pushed to (``source_kind_mismatch``).
- One run per source at a time across processes, content and permissions alike
  (``ConnectorStore.hold``: PostgreSQL advisory lock, SQLite lease); a second caller gets
  ``sync_running`` (409). Not per stream: a content run applies the ACL it read along with the
  content, and a permission run slipping in between would have its newer ACL overwritten while
  its checkpoint moved past the change (a revocation lost). The price: a permission change
  waits for a content run in progress to end.
- Transient source errors (``transient``) are retried with exponential backoff, resuming from
  the stored checkpoint; anything else fails the run. A run never raises past ``run_*`` except
  for ``sync_running`` and an unknown source: a failing connector cannot take a process down.
- Identities the map cannot resolve are recorded per source (``unmapped_identities``); an
  unmapped deny makes the document private and the report names it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from app.identity import IdentityMap, MapStats
from core.errors import (
    BackendUnavailableError,
    ClearanceError,
    ConfigError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from core.logging import Log
from core.metrics import Metrics
from core.settings import Settings
from core.types import Acl, SourceDocument
from ingest.connectors.contract import Batch, Connector, ConnectorDocument, load
from ingest.pipeline import Ingestor
from ingest.plan import check_deletes, keys_to_delete
from store.audit import WriteActor, WriteAudit, set_job, write_context
from store.catalog import Catalog, JobItemRow, JobOwner, JobState, unavailable, utcnow
from store.connectors import ConnectorSourceRow, ConnectorStore

log = Log("clearance.connectors")
T = TypeVar("T")

SKIPPED_SHOWN = 20  # skipped items a report lists (all are counted)
# Config keys a connector may take that bound what it reads, capped at ``ingest.max_file_bytes``.
SIZE_KEYS = ("max_file_bytes", "max_message_bytes")


def retryable(exc: ClearanceError) -> bool:
    """A document or ACL failure worth retrying on the next run (the checkpoint is held back):
    any unavailable backend (catalog, index, embedder, parser) or any server-side (5xx) error.
    By class and status, not by a list of codes that drifts from what is raised; plus the one
    per-document failure the pipeline raises as a 422 although its cause is transient: the
    embedder failing (``embed_failed``, ``ingest.pipeline``)."""
    return isinstance(exc, BackendUnavailableError) or exc.status >= 500 or exc.code == "embed_failed"
_TRANSIENT_NAMES = frozenset({"OperationalError", "InterfaceError", "abort", "TimeoutError", "ConnectionError"})


def transient(exc: BaseException) -> bool:
    """A source error worth retrying: network and OS errors, driver connection errors
    (``OperationalError``/``InterfaceError`` of DB-API drivers, ``imaplib.IMAP4.abort``), the
    catalog being unavailable, or any exception with ``transient = True``."""
    if getattr(exc, "transient", False):
        return True
    if isinstance(exc, ClearanceError):
        return isinstance(exc, BackendUnavailableError)
    if isinstance(exc, OSError):
        return True
    return any(t.__name__ in _TRANSIENT_NAMES for t in type(exc).__mro__)


def actor_for(source: str, tenant: str) -> WriteActor:
    """The system actor a connector source writes as (``connector:<source>``)."""
    return WriteActor(issuer="clearance", subject=f"connector:{source}", principals_hash="", tenant=tenant)


@dataclass
class SyncReport:
    """What one run did."""

    source: str
    stream: str  # content | permissions
    outcome: str = "ok"  # ok | partial (some documents failed) | failed (the run failed) | skipped
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (doc_id, code, message)
    error: tuple[str, str] | None = None  # (code, message) when the run failed
    unmapped: list[str] = field(default_factory=list)  # namespace/kind/name, this run
    private_docs: list[str] = field(default_factory=list)  # made private by an unmapped deny
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item, reason) the connector left unread
    batches: int = 0
    attempts: int = 1
    checkpoint_saved: bool = False
    job_id: int | None = None
    seconds: float = 0.0

    def count(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "stream": self.stream, "outcome": self.outcome, "counts": dict(self.counts),
                "errors": [{"doc": d, "code": c, "message": m} for d, c, m in self.errors[:100]],
                "error_count": len(self.errors),
                "error": {"code": self.error[0], "message": self.error[1]} if self.error else None,
                "unmapped": self.unmapped[:100], "unmapped_count": len(self.unmapped),
                "private_docs": self.private_docs[:100],
                "skipped": [{"item": i, "reason": r} for i, r in self.skipped[:SKIPPED_SHOWN]],
                "skipped_count": len(self.skipped), "batches": self.batches, "attempts": self.attempts,
                "checkpoint_saved": self.checkpoint_saved, "job_id": self.job_id, "seconds": round(self.seconds, 3)}


class ConnectorSync:
    """Runs the content and permission syncs of connector sources."""

    def __init__(self, settings: Settings, catalog: Catalog, ingestor: Ingestor, identity: IdentityMap,
                 *, metrics: Metrics | None = None, write_audit: WriteAudit | None = None,
                 factories: dict[str, Callable[..., Connector]] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.catalog = catalog
        self.ingestor = ingestor
        self.identity = identity
        self.metrics = metrics
        self.store = ConnectorStore(catalog)
        self.write_audit = write_audit or WriteAudit(catalog)
        # Connectors added in-process by name, before the installed entry points (shared with the
        # source registry, which checks a new source's config with the same factory).
        self.factories: dict[str, Callable[..., Connector]] = factories if factories is not None else {}
        self._sleep = sleep
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    @property
    def tenant(self) -> str:
        return self.settings.ingest.tenant

    # -- entry points -------------------------------------------------------------------------
    def run_content(self, source: str) -> SyncReport:
        """Sync content (and deletions) of ``source`` from its stored checkpoint."""
        return self._run(source, "content", self._content)

    def run_permissions(self, source: str) -> SyncReport:
        """Apply ACL-only changes of ``source`` from its stored checkpoint (never the embedder)."""
        return self._run(source, "permissions", self._permissions)

    def run(self, source: str, stream: str) -> SyncReport:
        if stream == "content":
            return self.run_content(source)
        if stream == "permissions":
            return self.run_permissions(source)
        raise InvalidRequestError(f"stream must be content or permissions, got {stream!r}", code="invalid_stream")

    def config(self, source: str) -> ConnectorSourceRow:
        """The connector of ``source``, or 404 ``unknown_source`` / 422 ``not_a_connector_source``."""
        with unavailable("catalog"):
            reg = self.catalog.source(source)
        if reg is None:
            raise NotFoundError(f"unknown source {source!r}", code="unknown_source")
        row = self.store.source(source)
        if reg.kind != "connector" or row is None:
            raise InvalidRequestError(f"source {source!r} is a {reg.kind} source, not a connector source",
                                      code="not_a_connector_source")
        return row

    def connector(self, row: ConnectorSourceRow) -> Connector:
        factory = self.factories.get(row.connector) or load(row.connector)
        return factory(row.name, capped_config(row.connector, row.config_dict, self.settings.ingest.max_file_bytes))

    def check_root(self, row: ConnectorSourceRow) -> None:
        """Before each run: a config ``root`` still resolves to the folder stored at creation and
        still lies under ``ingest.allowed_roots`` (a symlink swapped above it, or the allowed
        roots narrowed since, refuse the run: 403 ``path_not_allowed`` / ``root_moved``).
        The registry row keeps the root resolved at creation for API-created sources; sources the
        operator's local CLI registered have none there and are trusted as made."""
        root = row.config_dict.get("root")
        with unavailable("catalog"):
            reg = self.catalog.source(row.name)
        if not isinstance(root, str) or reg is None or not reg.root:
            return
        from app.sources import SourceRegistry

        resolved = SourceRegistry(self.settings, self.catalog, self.write_audit).server_folder(root, None)
        if str(resolved) != reg.root:
            raise PermissionDeniedError(f"the root of source {row.name!r} ({root}) now resolves to {resolved}: "
                                        "a link above it changed; re-create the source to read the new folder",
                                        code="root_moved")

    # -- the run frame ------------------------------------------------------------------------
    def _run(self, source: str, stream: str, body: Callable[[Connector, ConnectorSourceRow, SyncReport, Callable[[], None]], None],
             *, missed: bool = False) -> SyncReport:
        row = self.config(source)
        lease_s = self.settings.scheduler.lease_s
        owner = f"{self.owner}:{threading.get_ident()}"  # a lease per run: threads of one process exclude each other
        hold: AbstractContextManager[bool] = self.store.hold(source, owner, lease_s)
        with hold as got:
            if not got:
                raise ConflictError(f"a sync of source {source!r} is running (another process or thread); "
                                    "try again when it ends", code="sync_running")
            return self._locked(row, stream, body, missed=missed, owner=owner)

    def run_held(self, source: str, stream: str, *, missed: bool) -> SyncReport | None:
        """For the scheduler: run unless another process holds the source (then None)."""
        try:
            return self._run(source, stream, self._content if stream == "content" else self._permissions, missed=missed)
        except ConflictError as exc:
            if exc.code == "sync_running":
                return None
            raise

    def _locked(self, row: ConnectorSourceRow, stream: str,
                body: Callable[[Connector, ConnectorSourceRow, SyncReport, Callable[[], None]], None], *,
                missed: bool, owner: str) -> SyncReport:
        source = row.name
        report = SyncReport(source, stream)
        t0 = time.perf_counter()
        self.store.run_started(source, stream, missed=missed)
        if missed and self.metrics is not None:
            self.metrics.connector_missed(source, stream)

        def renew() -> None:
            if not self.store.renew(source, owner, self.settings.scheduler.lease_s):
                raise ConflictError(f"the sync lock of source {source!r} was lost (lease expired or lock connection "
                                    "dropped); the run stops before saving its checkpoint", code="sync_lease_lost")

        sched = self.settings.scheduler
        with write_context(actor_for(source, self.tenant), f"connector_{stream}", tenant=self.tenant):
            attempt = 0
            while True:
                attempt += 1
                report.attempts = attempt
                connector: Connector | None = None
                try:
                    self.check_root(row)
                    connector = self.connector(row)
                    body(connector, row, report, renew)
                    report.error = None
                    break
                except Exception as exc:  # a connector must never take the process down
                    code = exc.code if isinstance(exc, ClearanceError) else type(exc).__name__
                    message = scrub(exc.message if isinstance(exc, ClearanceError) else str(exc))
                    report.error = (code, message[:1000])
                    if attempt > sched.retries or not transient(exc):
                        log.warning("connector.run_failed", source=source, stream=stream, code=code, attempts=attempt)
                        break
                    delay = min(sched.backoff_max_s, sched.backoff_s * (2 ** (attempt - 1)))
                    log.info("connector.retry", source=source, stream=stream, code=code, attempt=attempt, delay_s=delay)
                    self._sleep(delay)
                finally:
                    if connector is not None:
                        report.skipped = skipped_of(connector)
                        try:
                            connector.close()
                        except Exception:  # closing failed: nothing left to do with it
                            log.warning("connector.close_failed", source=source, stream=stream)
        report.seconds = time.perf_counter() - t0
        if report.error is not None:
            report.outcome = "failed"
        elif report.errors:
            report.outcome = "partial"
        self._finish(row, report)
        return report

    def _finish(self, row: ConnectorSourceRow, report: SyncReport) -> None:
        source, stream = row.name, report.stream
        next_due = utcnow() + timedelta(seconds=row.interval_s(stream))
        try:
            self.store.run_finished(source, stream, outcome=report.outcome,
                                    error=f"{report.error[0]}: {report.error[1]}" if report.error else None,
                                    report=report.as_dict(), next_due=next_due)
            if stream == "content":
                self.catalog.record_sync(source, job_id=report.job_id, ok=report.outcome != "failed",
                                         error=f"{report.error[0]}: {report.error[1]}" if report.error else None)
            self.write_audit.record(actor=actor_for(source, self.tenant), action="connector_sync",
                                    outcome=report.outcome, tenant=self.tenant, source=source, job_id=report.job_id,
                                    status=200 if report.outcome != "failed" else 500,
                                    code=report.error[0] if report.error else None,
                                    detail={"stream": stream, "counts": report.counts, "errors": len(report.errors),
                                            "unmapped": len(report.unmapped), "private_docs": report.private_docs[:50],
                                            "attempts": report.attempts})
        except ClearanceError as exc:  # the catalog is down: the run's writes stand, its record is lost
            log.error("connector.record_failed", source=source, stream=stream, code=exc.code)
        if self.metrics is not None:
            self.metrics.connector_run(source, stream, report.outcome, report.seconds)
        log.info("connector.run_done", source=source, stream=stream, outcome=report.outcome, counts=report.counts,
                 errors=len(report.errors), took_ms=round(report.seconds * 1000, 1))

    # -- helpers ------------------------------------------------------------------------------
    def _record_identities(self, source: str, stats: MapStats, report: SyncReport) -> None:
        self.store.record_unmapped(source, dict(stats.unmapped))
        self.store.clear_unmapped(source, stats.mapped)
        report.unmapped = sorted(f"{ns}/{kind}/{name}" for ns, kind, name in stats.unmapped)
        report.private_docs = sorted(set(stats.private_docs))

    def _batches(self, stream: Iterator[Batch[T]]) -> Iterator[tuple[list[T], str | None, bool]]:
        """The connector's batches cut to at most ``scheduler.batch_docs`` items: (items, the
        checkpoint after them or None mid-batch, whether it is the last slice of the batch)."""
        step = self.settings.scheduler.batch_docs
        for batch in stream:
            items = list(batch.items)
            if not items:
                yield [], batch.checkpoint, True
                continue
            for i in range(0, len(items), step):
                last = i + step >= len(items)
                yield items[i:i + step], batch.checkpoint if last else None, last

    # -- content ------------------------------------------------------------------------------
    def _content(self, connector: Connector, row: ConnectorSourceRow, report: SyncReport, renew: Callable[[], None]) -> None:
        source = row.name
        stats = MapStats()
        self.ingestor.recover()
        job = self.catalog.start_job(source, kind="connector", owner=JobOwner.current())
        report.job_id = int(job.id or 0)
        set_job(job.id)
        held_back = False  # a transiently failed document: do not advance past it
        perms_reset = False
        try:
            since = self.store.stream(source, "content").checkpoint
            for items, checkpoint, _last in self._batches(connector.documents(since)):
                report.batches += 1
                if items:
                    held_back |= self._apply(source, items, stats, report, job.id or 0, row.connector,
                                             getattr(connector, "namespace", None))
                if not perms_reset and (report.counts.get("added") or report.counts.get("updated")):
                    # The content run wrote ACLs the permission stream's checkpoint knows nothing
                    # of: its next run compares every ACL again (``current.acl == mapped.acl``
                    # keeps that cheap), or a change undone before it would be missed for good.
                    self.store.reset_checkpoint(source, "permissions")
                    perms_reset = True
                if checkpoint is not None and not held_back:
                    renew()
                    self.store.save_checkpoint(source, "content", checkpoint)
                    report.checkpoint_saved = True
                renew()
            self._reconcile(connector, source, report, job.id or 0, renew)
            job.state = JobState.DONE
        except BaseException:
            job.state = JobState.FAILED
            raise
        finally:
            self._record_identities(source, stats, report)
            job.finished_at = utcnow()
            for outcome, n in report.counts.items():
                if hasattr(job, outcome):
                    setattr(job, outcome, n)
            try:
                self.catalog.save_job(job, [])
            except ClearanceError:
                log.error("connector.job_unsaved", source=source)
        if report.counts.get("added") or report.counts.get("updated"):
            self.ingestor.index.optimize()

    def _document(self, source: str, d: ConnectorDocument, stats: MapStats, kind: str, namespace: str | None) -> SourceDocument:
        mapped = self.identity.acl(d.acl, stats, d.doc_id, namespace=namespace, passthrough=kind == PASSTHROUGH_CONNECTOR)
        return SourceDocument(source=source, doc_id=d.doc_id, uri=d.uri, filename=d.filename, content=d.content,
                              acl=mapped.acl, modified_at=d.modified_at, title=d.title, metadata=dict(d.metadata))

    def _apply(self, source: str, items: list[ConnectorDocument], stats: MapStats, report: SyncReport, job_id: int,
               kind: str, namespace: str | None) -> bool:
        docs: list[SourceDocument] = []
        job_items: list[JobItemRow] = []
        for d in items:
            try:
                docs.append(self._document(source, d, stats, kind, namespace))
            except ClearanceError as exc:  # e.g. a connector yielding a malformed document
                report.errors.append((d.doc_id, exc.code, exc.message[:500]))
                report.count("failed")
        held_back = False

        def done(i: int, res: tuple[str, int] | ClearanceError, ms: float) -> None:
            nonlocal held_back
            doc = docs[i]
            key = self.ingestor.doc_key(source, doc.doc_id)
            if isinstance(res, ClearanceError):
                report.errors.append((doc.doc_id, res.code, res.message[:500]))
                report.count("failed")
                held_back |= retryable(res)
                job_items.append(JobItemRow(job_id=job_id, doc_key=key, outcome="failed", error_code=res.code,
                                            error_message=res.message[:1000], duration_ms=ms))
            else:
                report.count(res[0])
                job_items.append(JobItemRow(job_id=job_id, doc_key=key, outcome=res[0], chunks=res[1], duration_ms=ms))

        if docs:
            self.ingestor.apply_many(docs, on_result=done)
        if job_items:
            with unavailable("catalog"), self.catalog.session() as s:
                for it in job_items:
                    s.add(it)
                s.commit()
        return held_back

    def _reconcile(self, connector: Connector, source: str, report: SyncReport, job_id: int,
                   renew: Callable[[], None]) -> None:
        """Delete what the catalog holds and the listing lacks, under the mass-delete guard. A
        refused mass delete first makes every vanished document private (a document leaves the
        listing when access to it is withdrawn upstream: it must not keep its old readers while
        an admin looks at the refusal), then fails the run."""
        listed = connector.listing()
        holds, gone = keys_to_delete(self.catalog, self.tenant, source, listed)
        renew()
        try:
            check_deletes(source, holds, len(gone), self.settings.ingest.max_delete_fraction, False)
        except ClearanceError:
            self._make_private(gone, source, report)
            raise
        for key in gone:
            try:
                if self.ingestor.writer.delete(key):
                    report.count("deleted")
                    if self.metrics is not None:
                        self.metrics.ingested(source, "deleted")
            except ClearanceError as exc:
                report.errors.append((key, exc.code, exc.message[:500]))
                report.count("failed")

    def _make_private(self, keys: list[str], source: str, report: SyncReport) -> None:
        """``Acl.private()`` on each of ``keys`` not private yet (audited ``set_acl``; no delete)."""
        private = Acl.private()
        for key in keys:
            try:
                with unavailable("catalog"):
                    current = self.catalog.get(key)
                if current is None or current.acl == private:
                    continue
                self.ingestor.set_acl(key, private)
                report.count("made_private")
                if self.metrics is not None:
                    self.metrics.ingested(source, "acl_updated")
            except ClearanceError as exc:
                report.errors.append((key, exc.code, exc.message[:500]))
                report.count("failed")

    # -- permissions --------------------------------------------------------------------------
    def _permissions(self, connector: Connector, row: ConnectorSourceRow, report: SyncReport,
                     renew: Callable[[], None]) -> None:
        source = row.name
        stats = MapStats()
        held_back = False
        namespace = getattr(connector, "namespace", None)
        passthrough = row.connector == PASSTHROUGH_CONNECTOR
        try:
            # The checkpoint is kept with the identity map's fingerprint: a changed map (settings,
            # or the directory a rule reads) maps every ACL again from a full read.
            mapping = self.identity.fingerprint()
            since = unwrap_checkpoint(self.store.stream(source, "permissions").checkpoint, mapping)
            for items, checkpoint, _last in self._batches(connector.permissions(since)):
                report.batches += 1
                for change in items:
                    key = self.ingestor.doc_key(source, change.doc_id)
                    mapped = self.identity.acl(change.acl, stats, change.doc_id, namespace=namespace, passthrough=passthrough)
                    try:
                        with unavailable("catalog"):
                            current = self.catalog.get(key)
                        if current is None:
                            report.count("not_indexed")  # its content run brings it with its ACL
                            continue
                        if current.acl == mapped.acl:
                            report.count("unchanged")
                            continue
                        self.ingestor.set_acl(key, mapped.acl)
                        report.count("acl_updated")
                        if self.metrics is not None:
                            self.metrics.ingested(source, "acl_updated")
                    except ClearanceError as exc:
                        report.errors.append((change.doc_id, exc.code, exc.message[:500]))
                        report.count("failed")
                        held_back |= retryable(exc)
                if checkpoint is not None and not held_back:
                    renew()
                    self.store.save_checkpoint(source, "permissions", wrap_checkpoint(checkpoint, mapping))
                    report.checkpoint_saved = True
                renew()
            # Documents that left the listing (access withdrawn upstream, or removed) become
            # private now, not at the next content run; deleting them stays the content run's job.
            _holds, gone = keys_to_delete(self.catalog, self.tenant, source, connector.listing())
            self._make_private(gone, source, report)
        finally:
            self._record_identities(source, stats, report)

    # -- status -------------------------------------------------------------------------------
    def status(self, source: str) -> dict[str, Any]:
        """The source's connector, its streams' state and its unmapped identities."""
        return connector_status(self.catalog, self.config(source))


PASSTHROUGH_CONNECTOR = "filesystem"  # the one connector whose identities are principals (acl.toml)
_CP_PREFIX = "idmap:"


def wrap_checkpoint(checkpoint: str, mapping: str) -> str:
    """A permission checkpoint stored with the identity map fingerprint it was mapped under."""
    return f"{_CP_PREFIX}{mapping}:{checkpoint}"


def unwrap_checkpoint(stored: str | None, mapping: str) -> str | None:
    """The connector's checkpoint, or None (a full read) when it was mapped under another map."""
    if stored is None or not stored.startswith(_CP_PREFIX):
        return None
    got, _, checkpoint = stored[len(_CP_PREFIX):].partition(":")
    return checkpoint if got == mapping else None


def capped_config(connector: str, config: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """``config`` with its size bounds defaulted to ``ingest.max_file_bytes`` where absent, for the
    keys the connector accepts (the known ones of the built-in connectors). A value that is not a
    positive integer, or above the server's bound, is an error naming the key (never replaced)."""
    accepted = _size_keys(connector)
    out = dict(config)
    for key in accepted:
        if key not in out:
            out[key] = max_bytes
            continue
        value = out[key]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"connector config {key!r} must be a positive number of bytes, got {value!r}",
                              code="invalid_source")
        if value > max_bytes:
            raise ConfigError(f"connector config {key!r} is {value} bytes, above this server's ingest.max_file_bytes "
                              f"({max_bytes})", code="invalid_source")
    return out


def _size_keys(connector: str) -> tuple[str, ...]:
    known = {"filesystem": ("max_file_bytes",), "posix": ("max_file_bytes",), "imap": ("max_message_bytes",)}
    return known.get(connector, ())


def skipped_of(connector: object) -> list[tuple[str, str]]:
    """What a connector left unread (its ``skipped``: (id, reason) pairs or objects with
    ``rel``/``doc_id`` and ``code``/``reason``), for the report and the source status."""
    out: list[tuple[str, str]] = []
    for item in list(getattr(connector, "skipped", None) or []):
        if isinstance(item, tuple) and len(item) >= 2:
            out.append((str(item[0]), str(item[1])))
        else:
            ident = getattr(item, "rel", None) or getattr(item, "doc_id", None) or str(item)
            out.append((str(ident), str(getattr(item, "code", None) or getattr(item, "reason", ""))))
    return out


def connector_status(catalog: Catalog, row: ConnectorSourceRow) -> dict[str, Any]:
    """A connector source's status from the catalog alone (the CLI reads it without the index):
    its connector and config (secrets masked), each stream's runs, failures, missed runs, last
    outcome and error, and the identities the map could not resolve."""
    from store.connectors import stream_dict, unmapped_dict

    store = ConnectorStore(catalog)
    source = row.name
    streams = {s.stream: stream_dict(s) for s in store.streams(source)}
    now = utcnow()
    for name in ("content", "permissions"):
        st = streams.setdefault(name, {"stream": name, "runs": 0, "failures": 0, "missed": 0,
                                       "consecutive_failures": 0, "last_outcome": None, "next_due": None})
        st["interval_s"] = row.interval_s(name)
        st["overdue"] = _overdue(st.get("next_due"), row.interval_s(name), now)
    return {"source": source, "connector": row.connector, "config": mask_config(row.config_dict),
            "content_interval_s": row.content_interval_s, "permission_interval_s": row.permission_interval_s,
            "streams": streams, "unmapped": [unmapped_dict(u) for u in store.unmapped(source)]}


def _overdue(next_due: str | None, interval_s: int, now: datetime) -> bool:
    if not next_due:
        return False
    return (now - datetime.fromisoformat(next_due)).total_seconds() > interval_s


_SECRET_WORDS = ("pass", "secret", "token", "credential", "key")
_URL_PASSWORD = re.compile(r"(\w+://[^:/@\s]+:)[^@\s]+@")
_KEY_VALUE_SECRET = re.compile(r"((?:password|passwd|pwd|secret|token)\s*[=:]\s*)('[^']*'|\"[^\"]*\"|\S+)", re.IGNORECASE)


def scrub(message: str) -> str:
    """An error message fit to store, log and show: URL passwords and ``password=...`` values
    replaced by ``***`` (a driver's error may quote the connection string it was given)."""
    return _KEY_VALUE_SECRET.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", message))


def mask_config(config: dict[str, Any]) -> dict[str, Any]:
    """A connector config fit to show and audit: values of secret-looking keys and the password
    of URLs (``scheme://user:pw@host``) replaced by ``***``."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if any(w in k.lower() for w in _SECRET_WORDS):
            out[k] = "***"
        elif isinstance(v, str) and "://" in v and "@" in v.split("://", 1)[1].split("/", 1)[0]:
            scheme, rest = v.split("://", 1)
            userinfo, host = rest.split("@", 1)
            out[k] = f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}" if ":" in userinfo else v
        elif isinstance(v, dict):
            out[k] = mask_config(v)
        else:
            out[k] = v
    return out


def check_config(config: object) -> dict[str, Any]:
    """A connector config: a JSON object (422 ``invalid_source`` otherwise)."""
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError as exc:
            raise InvalidRequestError(f"the connector config is not JSON: {exc}", code="invalid_source") from exc
    if not isinstance(config, dict):
        raise InvalidRequestError("the connector config must be a JSON object", code="invalid_source")
    try:
        json.dumps(config)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"the connector config is not JSON-serialisable: {exc}", code="invalid_source") from exc
    return config
