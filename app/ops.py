"""Readiness and scrape-time gauges.

Readiness (``GET /readyz``) answers "can this process serve correct, filtered answers now?":

- ``index``: a count against the index (``size``); ``catalog``: ``SELECT 1``; ``auth``: in
  ``oidc`` mode every issuer's signing keys are fresh, or cached within their grace period, or
  fetchable now (at most one fetch per cooldown, the cache's own rule); in ``dev`` mode the
  static dev key is always there. Any of these failing makes the process not ready: 503 with
  ``Retry-After`` and the failing checks (the audit trail needs the catalog, and a search
  without keys or index cannot be answered).
- ``model``: the embedder was loaded at startup (the process does not start otherwise); if its
  last query embedding raised, searches are being answered from BM25 alone, so the check
  reports ``degraded`` but the process stays ready: every replica shares the model, and pulling
  them all out of rotation would turn lower-quality answers into no answers.
- Tenants (``tenant_problems``): the tenants the catalog holds documents of, and the deployment's
  own ``ingest.tenant``, must be tenants some configured issuer can assert (its ``tenant`` or
  ``tenants``; the dev issuer's ``dev_tenant``). Otherwise every search of those documents
  answers empty while everything else looks healthy, so it is a warning (``degraded``, with the
  tenants named, in ``checks.tenants``) and a log line at startup; still ready, since no restart
  fixes configuration.
- ``connectors`` (``app.scheduler.connector_health``): connector streams failing in a row
  (``scheduler.failing_after``) or more than one interval overdue, with missed-run counts. A
  warning (``degraded``), never fatal: a failing connector leaves its own source stale, while the
  process still answers every search correctly, so pulling it out of rotation would help no one.
- Stale sources (``store.freshness``) are warnings with the process still ready: staleness is
  a property of the data, which no restart or rerouting fixes; it shows in ``/metrics``
  (``clearance_source_stale``) for alerting and in every search answer that holds such chunks.
"""

from __future__ import annotations

import time
from typing import Any

from app.services import Services
from core.errors import ClearanceError
from core.logging import Log

log = Log("clearance.ops")

RETRY_AFTER_S = 5


def _check(fn: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        detail = fn() or {}
        out: dict[str, Any] = {"ok": True, **detail}
    except ClearanceError as exc:
        out = {"ok": False, "code": exc.code, "error": exc.message}
    except Exception as exc:  # a probe must answer, whatever broke
        out = {"ok": False, "code": "unavailable", "error": type(exc).__name__}
    out["took_ms"] = round((time.perf_counter() - t0) * 1000, 3)
    return out


def readiness(services: Services) -> tuple[bool, dict[str, Any]]:
    """(ready, body). Probes are cheap: one count, one ``SELECT 1``, no model inference."""
    checks = {
        "index": _check(lambda: {"points": services.index.size()}),
        "catalog": _check(services.catalog.ping),
        "auth": _check(lambda: _auth_check(services)),
        "model": _model_check(services),
    }
    warnings: list[str] = []
    stale: list[str] = []
    if checks["catalog"]["ok"]:
        try:
            for st in services.freshness.statuses():
                if st.stale:
                    stale.append(st.name)
                    warnings.append(st.warning())
        except ClearanceError as exc:
            warnings.append(f"source freshness unknown: {exc.message}")
    if checks["model"].get("degraded"):
        warnings.append("the embedding model is failing: searches are answered from BM25 only")
    if checks["catalog"]["ok"]:
        try:
            tenants = tenant_problems(services)
            checks["tenants"] = {"ok": not tenants["problems"], **tenants}
            warnings.extend(tenants["problems"])
        except ClearanceError as exc:
            warnings.append(f"tenants unknown: {exc.message}")
    if checks["catalog"]["ok"]:
        try:
            from app.scheduler import connector_health
            from store.connectors import ConnectorStore

            health = connector_health(ConnectorStore(services.catalog), services.settings.scheduler.failing_after)
            if health["sources"]:
                checks["connectors"] = health
                warnings.extend(health["problems"])
        except ClearanceError as exc:
            warnings.append(f"connector state unknown: {exc.message}")
    ready = all(checks[name]["ok"] for name in ("index", "catalog", "auth"))  # never connectors: see above
    status = "not_ready" if not ready else ("degraded" if warnings else "ready")
    return ready, {"status": status, "checks": checks, "stale_sources": stale, "warnings": warnings}


def assertable_tenants(services: Services) -> set[str]:
    """Tenants a valid token can carry in this deployment."""
    auth = services.settings.auth
    if auth.mode == "dev":
        return {auth.dev_tenant}
    return {t for i in auth.issuers for t in (i.tenant, *i.tenants)}


def tenant_problems(services: Services) -> dict[str, Any]:
    """The tenants stored, the tenants tokens can assert, and what does not line up."""
    from store.catalog import unavailable

    with unavailable("catalog"):
        stored = services.catalog.tenants()
    assertable = assertable_tenants(services)
    own = services.settings.ingest.tenant
    problems = []
    orphaned = sorted(stored - assertable)
    if orphaned:
        problems.append(f"the index holds documents of tenant(s) {', '.join(orphaned)} that no configured issuer "
                        f"can assert (issuers assert: {', '.join(sorted(assertable)) or 'none'}): nobody can read them")
    if own not in assertable and own not in orphaned:
        problems.append(f"this deployment writes tenant {own!r} (ingest.tenant) but no configured issuer asserts it "
                        f"(issuers assert: {', '.join(sorted(assertable)) or 'none'}): searches will answer empty")
    return {"stored": sorted(stored), "assertable": sorted(assertable), "deployment": own, "problems": problems}


def warn_tenant_mismatch(services: Services) -> None:
    """Startup check: one warning line per tenant problem (never fatal)."""
    try:
        for problem in tenant_problems(services)["problems"]:
            log.warning("startup.tenant_mismatch", problem=problem)
    except ClearanceError as exc:
        log.warning("startup.tenant_check_failed", error=exc.code)


def _auth_check(services: Services) -> dict[str, Any]:
    settings = services.settings.auth
    if settings.mode == "dev":
        return {"mode": "dev"}
    issuers = {}
    for issuer in settings.issuers:
        source = services.auth.validator.key_source(issuer.issuer)
        if source is None:
            continue
        # Serves cached keys without I/O; refetches only when the cache's own rules allow it;
        # raises BackendUnavailableError once keys are past their grace period (fail closed).
        keys = source.key_set(None)
        issuers[issuer.issuer] = {"keys": len(keys.keys)}
    return {"mode": "oidc", "issuers": issuers}


def _model_check(services: Services) -> dict[str, Any]:
    emb = services.embedder
    out: dict[str, Any] = {"ok": True, "name": getattr(emb, "name", "?"), "dim": getattr(emb, "dim", None)}
    error = getattr(emb, "last_error", None)
    if error is not None:
        out.update(degraded=True, error=error)
    return out
