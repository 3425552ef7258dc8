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
- Stale sources (``store.freshness``) are warnings with the process still ready: staleness is
  a property of the data, which no restart or rerouting fixes; it shows in ``/metrics``
  (``clearance_source_stale``) for alerting and in every search answer that holds such chunks.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from core.errors import ClearanceError
from core.logging import Log

if TYPE_CHECKING:
    from app.services import Services
    from store.freshness import Freshness
    from retrieval.index import ChunkIndex

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


def readiness(services: "Services") -> tuple[bool, dict[str, Any]]:
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
    ready = all(checks[name]["ok"] for name in ("index", "catalog", "auth"))
    status = "not_ready" if not ready else ("degraded" if warnings else "ready")
    return ready, {"status": status, "checks": checks, "stale_sources": stale, "warnings": warnings}


def _auth_check(services: "Services") -> dict[str, Any]:
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


def _model_check(services: "Services") -> dict[str, Any]:
    emb = services.embedder
    out: dict[str, Any] = {"ok": True, "name": getattr(emb, "name", "?"), "dim": getattr(emb, "dim", None)}
    error = getattr(emb, "last_error", None)
    if error is not None:
        out.update(degraded=True, error=error)
    return out


def scrape_gauges(freshness: "Freshness", index: "ChunkIndex") -> Iterable[Metric]:
    """Gauges read at scrape time. A backend that cannot answer leaves its families out (and
    says so in the log) rather than failing the whole scrape."""
    lag = GaugeMetricFamily("clearance_source_lag_seconds", "Seconds since the last successful sync or push",
                            labels=["source"])
    sla = GaugeMetricFamily("clearance_source_sla_seconds", "Freshness SLA of the source", labels=["source"])
    stale = GaugeMetricFamily("clearance_source_stale", "1 when the source is beyond its freshness SLA",
                              labels=["source"])
    try:
        for st in freshness.statuses():
            lag.add_metric([st.name], st.lag_s if st.lag_s is not None else math.inf)
            stale.add_metric([st.name], 1.0 if st.stale else 0.0)
            if st.sla_s is not None:
                sla.add_metric([st.name], float(st.sla_s))
        yield from (lag, sla, stale)
    except Exception as exc:
        log.warning("metrics.sources_unavailable", error=type(exc).__name__)
    try:
        points = index.size()
    except Exception as exc:
        log.warning("metrics.index_unavailable", error=type(exc).__name__)
    else:
        g = GaugeMetricFamily("clearance_index_points", "Chunks (points) in the index")
        g.add_metric([], float(points))
        yield g
