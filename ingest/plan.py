"""What a sync would do, computed from the catalog without touching the index: the mass-delete
guard every full sync applies first, and the plan ``clearance ingest PATH --dry-run`` prints.

Mass-delete guard: a sync that would delete more than ``ingest.max_delete_fraction`` of the
documents a source holds, or all of them, is refused before anything is written
(``ConflictError`` ``mass_delete_refused``, 409) unless the caller says ``allow_deletes``. A
wrong but existing path (``clearance ingest demo/finance --source demo``) is the usual cause.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from core.errors import ConflictError
from core.types import Acl
from ingest.sources import FilesystemSource, Skipped, content_hash, read_regular
from ingest.writer import metadata_differs
from retrieval.payload import doc_key
from store.catalog import Catalog, DocState


def delete_guard(source: str, holds: int, deleting: int, max_fraction: float) -> str | None:
    """Why deleting ``deleting`` of the ``holds`` documents of ``source`` is refused, or None."""
    if holds == 0 or deleting == 0:
        return None
    if deleting == holds:
        return (f"this sync would delete all {holds} documents of source {source!r} (is the path right?); "
                "pass allow_deletes (CLI: --allow-deletes) to do it, or delete the source on purpose "
                "with `clearance sources delete`")
    if deleting > max_fraction * holds:
        return (f"this sync would delete {deleting} of the {holds} documents of source {source!r}, more than "
                f"ingest.max_delete_fraction ({max_fraction:g}); pass allow_deletes (CLI: --allow-deletes) "
                "if that is intended")
    return None


def check_deletes(source: str, holds: int, deleting: int, max_fraction: float, allow_deletes: bool) -> bool:
    """Raise ``mass_delete_refused`` when the guard trips and deletes are not allowed; True when
    this is a mass delete that was allowed (the job's audit event says so)."""
    why = delete_guard(source, holds, deleting, max_fraction)
    if why is not None and not allow_deletes:
        raise ConflictError(why, code="mass_delete_refused")
    return why is not None


@dataclass(frozen=True)
class FilePlan:
    doc_id: str
    action: str  # add | change | acl | metadata | unchanged
    acl: Acl


@dataclass
class SyncPlan:
    source: str
    root: str
    files: list[FilePlan] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    holds: int = 0
    guard: str | None = None  # why the real sync would be refused (mass-delete guard)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files:
            out[f.action] = out.get(f.action, 0) + 1
        if self.deletes:
            out["delete"] = len(self.deletes)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "root": self.root, "counts": self.counts(), "holds": self.holds,
            "files": [{"doc_id": f.doc_id, "action": f.action, **f.acl.as_dict()} for f in self.files],
            "deletes": self.deletes,
            "skipped": [{"doc_id": s.rel, "code": s.code, "message": s.message} for s in self.skipped],
            "warnings": self.warnings, "refused": self.guard,
        }


def plan_sync(catalog: Catalog, tenant: str, source: FilesystemSource, max_delete_fraction: float,
              allow_deletes: bool = False) -> SyncPlan:
    """Compare the folder with the catalog: per file its effective ACL and what the sync would
    do; the documents it would delete; private files; whether the guard would refuse it."""
    rows = {r.doc_id: r for r in catalog.documents(tenant, source.name)}
    plan = SyncPlan(source=source.name, root=str(source.root), holds=len(rows))
    for rel, path in source.files():
        acl = source.manifest.acl_for(rel)
        row = rows.get(rel)
        action = "add"
        if row is not None:
            try:
                digest = content_hash(read_regular(path)[0])
            except Exception:  # unreadable now: the real run will say why
                digest = ""
            if row.state != DocState.INDEXED or row.content_hash != digest:
                action = "change"
            elif row.acl != acl:
                action = "acl"
            else:
                doc = source.read(rel, path)
                action = "metadata" if metadata_differs(row, doc) else "unchanged"
        plan.files.append(FilePlan(rel, action, acl))
    listed = set(source.doc_ids())
    plan.deletes = sorted(d for d in rows if d not in listed)
    plan.skipped = list(source.skipped)
    plan.warnings = source.warnings()
    why = delete_guard(source.name, plan.holds, len(plan.deletes), max_delete_fraction)
    plan.guard = None if allow_deletes else why
    return plan


def keys_to_delete(catalog: Catalog, tenant: str, source: str, listed: Iterable[str]) -> tuple[int, list[str]]:
    """(documents the source holds, keys of those not in ``listed``)."""
    keep = {doc_key(tenant, source, d) for d in listed}
    rows = list(catalog.documents(tenant, source))
    return len(rows), sorted(r.key for r in rows if r.key not in keep)
