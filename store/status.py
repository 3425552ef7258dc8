"""Catalog views for operators (admin API and CLI): jobs with their errors, documents with
their status. Read-only; the catalog is a plain database, so the CLI reads it directly even
while a server owns the index."""

from __future__ import annotations

from typing import Any

from store.catalog import Catalog, JobRow, aware_utc

MAX_ERRORS_PER_JOB = 100


def _iso(value: Any) -> str | None:
    at = aware_utc(value)
    return at.isoformat() if at else None


def job_dict(job: JobRow, errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": job.id, "source": job.source, "kind": job.kind, "state": job.state,
        "started_at": _iso(job.started_at), "finished_at": _iso(job.finished_at),
        "counts": {k: getattr(job, k) for k in ("added", "updated", "acl_updated", "unchanged", "deleted", "failed")},
        "chunks": job.chunks, "errors": errors,
    }


def job_dicts(catalog: Catalog, source: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Most recent first, each with up to ``MAX_ERRORS_PER_JOB`` failed documents."""
    jobs = catalog.jobs(source=source, limit=limit)
    errors: dict[int, list[dict[str, Any]]] = {}
    for item in catalog.failed_items([int(j.id) for j in jobs if j.id is not None]):
        bucket = errors.setdefault(item.job_id, [])
        if len(bucket) < MAX_ERRORS_PER_JOB:
            bucket.append({"doc": item.doc_key, "code": item.error_code, "message": item.error_message})
    return [job_dict(j, errors.get(int(j.id or 0), [])) for j in jobs]


def document_statuses(catalog: Catalog, tenant: str, source: str | None = None) -> list[dict[str, Any]]:
    """Documents in the catalog (status ``indexed``, or ``writing`` while an update is in flight
    or was interrupted), plus documents whose latest sync failed and that were never indexed
    (status ``failed``). An indexed document whose newer version failed keeps ``indexed`` and
    shows the failure in ``error_code``/``error_message``. Sorted by key."""
    rows = {r.key: r for r in catalog.documents(tenant, source)}
    sources = {source} if source is not None else {r.source for r in rows.values()} | {
        s.name for s in catalog.source_rows()}
    latest = [jobs[0] for s in sorted(sources) if (jobs := catalog.jobs(source=s, limit=1))]
    failures = {i.doc_key: i for i in catalog.failed_items([int(j.id) for j in latest if j.id is not None])
                if i.doc_key.startswith(f"{tenant}/")}
    out: dict[str, dict[str, Any]] = {}
    for key, r in rows.items():
        fail = failures.get(key)
        out[key] = {
            "key": key, "source": r.source, "doc_id": r.doc_id, "uri": r.uri, "title": r.title, "version": r.version,
            "status": r.state, "chunks": len(r.ids), "acl": r.acl.as_dict(), "modified_at": _iso(r.modified_at),
            "ingested_at": _iso(r.ingested_at), "error_code": fail.error_code if fail else None,
            "error_message": fail.error_message if fail else None,
        }
    for key, fail in failures.items():
        if key not in out:
            _, src, doc_id = key.split("/", 2)
            out[key] = {"key": key, "source": src, "doc_id": doc_id, "uri": None, "title": None, "version": None,
                        "status": "failed", "chunks": 0, "acl": None, "modified_at": None, "ingested_at": None,
                        "error_code": fail.error_code, "error_message": fail.error_message}
    return [out[k] for k in sorted(out)]
