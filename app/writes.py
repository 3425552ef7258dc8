"""Write service: every change to the index and catalog that a caller asks for (push PUT,
PATCH acl, DELETE, folder jobs, resyncs, source deletion) goes through here, so routes and the
CLI never orchestrate the write path themselves, and authorization and audit sit in one place.

Who may write (checked here, in this order, for every write; each refusal is an audited event):

1. the ``clearance:ingest`` scope (``clearance:admin`` implies it): else 403 ``insufficient_scope``;
2. the deployment's tenant (``ingest.tenant``): else 403 ``wrong_tenant``;
3. a registered source (``app.sources``): else 404 ``unknown_source`` (a write never creates one);
4. one of the source's writer principals among the caller's principals: else 403
   ``source_forbidden``. The admin scope does not bypass this: an admin who wants to write a
   source adds a writer first, which is itself audited;
5. the right kind: documents are pushed to ``push`` sources, folders synced into ``filesystem``
   sources (409 ``source_kind_mismatch``): a pushed ACL would be overwritten by the next sync of
   the folder's manifest, and a sync would delete every pushed document;
6. server-side folders only under ``ingest.allowed_roots`` (``SourceRegistry.server_folder``).

Audit (``store.audit``): each document change is recorded by ``IndexWriter`` in the transaction
that commits it, attributed to the caller through ``write_context``; request-level events (an
unchanged PUT, a job with its counts, a source change, a refusal) are stored here before the
answer leaves. A write that cannot be audited is answered 503, like a read.

Invariants kept from before: a write reaches ``Ingestor``/``IndexWriter`` only from here; each
write restarts its source's freshness clock after it succeeded; a PATCH of an unknown document is
a 404 decided under the document's write lock, never a check-then-act race.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.sources import ConnectorSpec, SourceRegistry, SourceView, actor_of
from auth.authenticator import INGEST, Authenticator
from core.errors import ConflictError, IngestError, InvalidRequestError, NotFoundError, PermissionDeniedError
from core.logging import current_request_id
from core.settings import Settings
from core.types import Acl, Entitlements, SourceDocument
from ingest.contracts import check_contract
from ingest.manifest import ManifestError
from ingest.pipeline import Ingestor, JobReport, Progress
from ingest.sources import FilesystemSource, content_hash
from store.audit import WriteContext, write_context
from store.catalog import Catalog, SourceRegistryRow, as_utc, unavailable


@dataclass(frozen=True)
class PutOutcome:
    outcome: str
    chunks: int  # the document's chunk count after the write, whatever the outcome


class WriteService:
    def __init__(self, settings: Settings, catalog: Catalog, ingestor: Ingestor, sources: SourceRegistry) -> None:
        self._settings = settings
        self._catalog = catalog
        self._ingestor = ingestor
        self.sources = sources

    @property
    def tenant(self) -> str:
        return self._settings.ingest.tenant

    # -- authorization ----------------------------------------------------------------------------
    def require_scope(self, caller: Entitlements, action: str, source: str = "", doc_id: str | None = None) -> None:
        """Steps 1 and 2: the ingest scope and the deployment's tenant (audited refusal)."""
        try:
            Authenticator.require(caller, INGEST)
            if caller.tenant != self.tenant:
                raise PermissionDeniedError("this deployment writes and administers another tenant's documents",
                                            code="wrong_tenant")
        except PermissionDeniedError as exc:
            raise self.sources.refuse(caller, action, source, exc, doc_id) from None

    def authorize(self, caller: Entitlements, action: str, source: str, doc_id: str | None = None,
                  kind: str | None = None) -> SourceRegistryRow:
        """The source ``caller`` may write with ``action``, or the audited refusal."""
        self.require_scope(caller, action, source, doc_id)
        try:
            row = self.sources.get(source)
            if row is None:
                raise NotFoundError(f"unknown source {source!r}: sources are created by an admin "
                                    "(POST /v1/admin/sources, `clearance sources add`)", code="unknown_source")
            if not caller.principals & row.writer_set:
                raise PermissionDeniedError(f"the caller is not a writer of source {source!r}", code="source_forbidden")
            if kind is not None and row.kind != kind:
                raise ConflictError(f"source {source!r} is a {row.kind} source; this write needs a {kind} source "
                                    + ("(its documents come from its folder and acl.toml: change those and resync)"
                                       if row.kind == "filesystem" else
                                       "(its documents come from its connector: change them in the system of record "
                                       "and sync, `clearance sync`)" if row.kind == "connector" else
                                       "(push its documents instead)"),
                                    code="source_kind_mismatch")
        except (PermissionDeniedError, NotFoundError, ConflictError) as exc:
            raise self.sources.refuse(caller, action, source, exc, doc_id) from None
        return row

    @contextmanager
    def _writing(self, caller: Entitlements, action: str) -> Iterator[WriteContext]:
        with write_context(actor_of(caller), action, request_id=current_request_id() or "", tenant=self.tenant) as ctx:
            yield ctx

    # -- documents --------------------------------------------------------------------------------
    def put_document(self, caller: Entitlements, doc: SourceDocument, metadata: dict[str, object], *,
                     modified_at_given: bool = True) -> PutOutcome:
        """``modified_at_given=False``: the caller sent no date, so ``doc.modified_at`` is "now";
        for content the catalog already holds, the stored date is kept instead (re-pushing the
        same document is then ``unchanged``, not a new date)."""
        self.authorize(caller, "put", doc.source, doc.doc_id, kind="push")
        check_contract(doc.source, metadata, self._settings.ingest.contracts)
        if not modified_at_given:
            with unavailable("catalog"):
                row = self._catalog.get(self._ingestor.doc_key(doc.source, doc.doc_id))
            if row is not None and row.content_hash == content_hash(doc.content):
                doc = replace(doc, modified_at=as_utc(row.modified_at))
        with self._writing(caller, "put"):
            outcome, chunks = self._ingestor.apply(doc)
        if outcome == "unchanged":  # nothing changed, so no change event: the request is one
            self.sources.event(caller, "put", "unchanged", source=doc.source, doc_id=doc.doc_id,
                               detail={"chunks": chunks})
        self._catalog.record_push(doc.source)
        return PutOutcome(outcome, chunks)

    def set_acl(self, caller: Entitlements, source: str, doc_id: str, acl: Acl) -> None:
        self.authorize(caller, "patch_acl", source, doc_id, kind="push")
        try:
            with self._writing(caller, "patch_acl"):
                self._ingestor.set_acl(self._ingestor.doc_key(source, doc_id), acl)
        except IngestError as exc:
            if exc.code == "not_found":
                raise NotFoundError("document not found") from exc
            raise
        self._catalog.record_push(source)

    def delete_document(self, caller: Entitlements, source: str, doc_id: str) -> None:
        self.authorize(caller, "delete", source, doc_id, kind="push")
        with self._writing(caller, "delete"):
            if not self._ingestor.delete(source, doc_id):
                raise NotFoundError("document not found")
        self._catalog.record_push(source)

    # -- folders ----------------------------------------------------------------------------------
    def sync_folder(self, caller: Entitlements, path: str, source: str | None, *,
                    allow_deletes: bool = False) -> JobReport:
        """Sync a directory on the server's filesystem into a registered filesystem source (how
        the CLI ingests while the server owns the index). The folder must be under
        ``ingest.allowed_roots`` (dev mode: or the source's registered root)."""
        name = source or Path(path).name
        row = self.authorize(caller, "sync", name, kind="filesystem")
        try:
            folder = self.sources.server_folder(path, row.root)
        except PermissionDeniedError as exc:
            raise self.sources.refuse(caller, "sync", name, exc) from None
        return self._sync(caller, "sync", folder, name, allow_deletes=allow_deletes)

    def resync(self, caller: Entitlements, source: str, *, allow_deletes: bool = False) -> JobReport:
        """Sync a filesystem source again from its registered root."""
        row = self.authorize(caller, "resync", source)
        if row.kind != "filesystem" or not row.root:
            raise InvalidRequestError(f"source {source!r} is not a filesystem source (it is {row.kind}); "
                                      "push sources are refreshed by their system of record", code="not_resyncable")
        try:
            folder = self.sources.server_folder(row.root, row.root)
        except PermissionDeniedError as exc:
            raise self.sources.refuse(caller, "resync", source, exc) from None
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"the root of source {source!r} is no longer a directory on the server",
                                      code="source_root_missing") from exc
        return self._sync(caller, "resync", folder, source, allow_deletes=allow_deletes)

    def sync_local(self, operator: Entitlements, path: Path, source: str | None, *, writers: list[str],
                   allow_deletes: bool = False, progress: Progress | None = None) -> JobReport:
        """The operator's own folder, read by the CLI process itself (no server involved): not
        confined to ``ingest.allowed_roots`` and no writer principal needed (the operator can
        open the data dir; see ``auth.local``). A new source is registered as a filesystem
        source rooted at the folder with ``writers``; a push source is refused."""
        folder = path.resolve()
        name = source or folder.name
        row = self.sources.get(name)
        if row is None:
            self.sources.create(operator, name, "filesystem", writers, str(folder), local=True)
        elif row.kind != "filesystem":
            raise self.sources.refuse(operator, "local_sync", name, ConflictError(
                f"source {name!r} is a push source: syncing a folder into it would replace its pushed documents",
                code="source_kind_mismatch"))
        report = self._sync(operator, "local_sync", folder, name, allow_deletes=allow_deletes, progress=progress)
        if row is not None and row.root != str(folder):  # the operator moved the source (after it synced)
            self.sources.update(operator, name, root=str(folder), local=True)
        return report

    def _sync(self, caller: Entitlements, action: str, folder: Path, name: str, *, allow_deletes: bool,
              progress: Progress | None = None) -> JobReport:
        try:
            with self._writing(caller, action) as ctx:
                src = FilesystemSource(folder, name, tenant=self.tenant)
                report = self._ingestor.sync(src, progress=progress, allow_deletes=allow_deletes)
        except (ManifestError, ConflictError) as exc:
            raise self.sources.refuse(caller, action, name, exc) from None
        self.sources.event(caller, action, "done", source=name, job_id=report.job_id or ctx.job_id,
                           detail={"path": str(folder), "counts": report.counts, "chunks": report.chunks,
                                   "mass_delete": report.mass_delete, "allow_deletes": allow_deletes,
                                   "errors": len(report.errors)})
        return report

    # -- sources ----------------------------------------------------------------------------------
    def create_source(self, caller: Entitlements, name: str, kind: str, writers: list[str],
                      root: str | None, *, connector: ConnectorSpec | None = None) -> SourceView:
        return self.sources.create(caller, name, kind, writers, root, connector=connector)

    def update_source(self, caller: Entitlements, name: str, writers: list[str] | None) -> SourceView:
        return self.sources.update(caller, name, writers=writers)

    def delete_source(self, caller: Entitlements, name: str) -> dict[str, object]:
        """Delete a source on purpose (admin): every document and chunk, then the source itself."""
        self.sources.require_admin(caller, "source_delete", name)
        with unavailable("catalog"):
            row = self.sources.get(name)
            keys = [r.doc_id for r in self._catalog.documents(self.tenant, name)]
            known = row is not None or bool(keys) or self._catalog.source_row(name) is not None
        if not known:
            raise NotFoundError(f"unknown source {name!r}", code="unknown_source")
        if row is not None and row.kind == "connector":
            # The source's sync lock for the whole delete: a sync running now would re-add what
            # is deleted (and one starting after finds the source gone).
            from store.connectors import ConnectorStore

            store = ConnectorStore(self._catalog)
            with store.hold(name, f"source_delete:{id(self):x}:{threading.get_ident()}", self._settings.scheduler.lease_s) as got:
                if not got:
                    raise self.sources.refuse(caller, "source_delete", name, ConflictError(
                        f"a sync of source {name!r} is running; delete it when the sync ends", code="sync_running"))
                with unavailable("catalog"):
                    keys = [r.doc_id for r in self._catalog.documents(self.tenant, name)]
                return self._delete_source(caller, name, row, keys, forget=store.forget)
        return self._delete_source(caller, name, row, keys, forget=None)

    def _delete_source(self, caller: Entitlements, name: str, row: Any, keys: list[str],
                       forget: Callable[[str], None] | None) -> dict[str, object]:
        deleted = 0
        with self._writing(caller, "source_delete"):
            for doc_id in keys:  # each delete is its own audited change
                deleted += int(self._ingestor.delete(name, doc_id))
        event = self.sources.event_row(caller, "source_delete", "deleted", name, {
            "documents_deleted": deleted, "source": SourceView.of(row).as_dict() if row is not None else None})
        with unavailable("catalog"):
            self._catalog.remove_source(name, journal=[event])
            if forget is not None:  # a connector source: its checkpoints and state go with it
                forget(name)
        return {"source": name, "deleted_documents": deleted}
