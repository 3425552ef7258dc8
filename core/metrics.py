"""Prometheus metrics, one ``CollectorRegistry`` per ``Metrics`` (built with the services, so two
apps in one process never share or collide). Units are in the names.

Families (label sets in braces):

- ``clearance_request_seconds{endpoint,method}`` (histogram) and
  ``clearance_requests_total{endpoint,method,status}``; ``endpoint`` is the route template
  (``/v1/documents/{source}/{doc_id:path}``), or ``unmatched``, never a raw path.
- ``clearance_requests_refused_total{endpoint,status,code}``: 401/403/404/422/503… by error code.
- ``clearance_search_seconds{leg}`` (``encode``: query embedding and BM25 encoding; ``engine``:
  the one scoped index call), ``clearance_search_results`` (hits per answer),
  ``clearance_search_degraded_total{reason}``.
- ``clearance_ingest_documents_total{source,outcome}``, ``clearance_parse_errors_total{source,code}``.
- ``clearance_embed_texts_total{kind}``, ``clearance_embed_seconds_total{kind}``,
  ``clearance_embed_errors_total{kind}``: throughput is ``rate(texts) / rate(seconds)``.
- ``clearance_audit_events_total{action}``, ``clearance_audit_write_failures_total``.
- ``clearance_connector_runs_total{source,stream,outcome}``, ``clearance_connector_run_seconds{stream}``,
  ``clearance_connector_missed_runs_total{source,stream}`` (``app.connectors``, ``app.scheduler``); at
  scrape time ``clearance_connector_consecutive_failures{source,stream}`` and
  ``clearance_connector_unmapped_identities{source}``.
- Read at scrape time from the catalog and the index (``add_collector``):
  ``clearance_source_lag_seconds{source}``, ``clearance_source_sla_seconds{source}``,
  ``clearance_source_stale{source}``, ``clearance_index_points``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_RESULT_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100)


class _Callback(Collector):
    def __init__(self, fn: Callable[[], Iterable[Metric]]) -> None:
        self._fn = fn

    def describe(self) -> Iterable[Metric]:
        return []  # names are only known at scrape time; nothing to reserve at registration

    def collect(self) -> Iterable[Metric]:
        return list(self._fn())


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_seconds = Histogram("clearance_request_seconds", "HTTP request latency by route",
                                         ["endpoint", "method"], registry=r, buckets=_LATENCY_BUCKETS)
        self.requests = Counter("clearance_requests", "HTTP requests by route and status",
                                ["endpoint", "method", "status"], registry=r)
        self.refused = Counter("clearance_requests_refused", "Requests refused, by status and error code",
                               ["endpoint", "status", "code"], registry=r)
        self.search_seconds = Histogram("clearance_search_seconds", "Search latency per leg",
                                        ["leg"], registry=r, buckets=_LATENCY_BUCKETS)
        self.search_results = Histogram("clearance_search_results", "Hits returned per search",
                                        registry=r, buckets=_RESULT_BUCKETS)
        self.search_degraded = Counter("clearance_search_degraded", "Searches answered in degraded mode",
                                       ["reason"], registry=r)
        self.ingest_documents = Counter("clearance_ingest_documents", "Documents ingested, by outcome",
                                        ["source", "outcome"], registry=r)
        self.parse_errors = Counter("clearance_parse_errors", "Documents that failed, by error code",
                                    ["source", "code"], registry=r)
        self.embed_texts = Counter("clearance_embed_texts", "Texts embedded", ["kind"], registry=r)
        self.embed_seconds = Counter("clearance_embed_seconds", "Seconds spent embedding", ["kind"], registry=r)
        self.embed_errors = Counter("clearance_embed_errors", "Embedding calls that raised", ["kind"], registry=r)
        self.audit_events = Counter("clearance_audit_events", "Audit events written", ["action"], registry=r)
        self.audit_failures = Counter("clearance_audit_write_failures", "Audit events that could not be written",
                                      registry=r)
        self.connector_runs = Counter("clearance_connector_runs", "Connector sync runs, by stream and outcome",
                                      ["source", "stream", "outcome"], registry=r)
        self.connector_run_seconds = Histogram("clearance_connector_run_seconds", "Connector sync run duration",
                                               ["stream"], registry=r, buckets=_LATENCY_BUCKETS + (60.0, 300.0, 1800.0))
        self.connector_missed_runs = Counter("clearance_connector_missed_runs",
                                             "Scheduled connector runs that started more than one interval late",
                                             ["source", "stream"], registry=r)

    def add_collector(self, fn: Callable[[], Iterable[Metric]]) -> None:
        """Families computed at scrape time (gauges read from the catalog or the index)."""
        self.registry.register(_Callback(fn))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- connectors -----------------------------------------------------------------------
    def connector_run(self, source: str, stream: str, outcome: str, seconds: float) -> None:
        self.connector_runs.labels(source, stream, outcome).inc()
        self.connector_run_seconds.labels(stream).observe(seconds)

    def connector_missed(self, source: str, stream: str) -> None:
        self.connector_missed_runs.labels(source, stream).inc()

    # -- ingestion ------------------------------------------------------------------------
    def ingested(self, source: str, outcome: str, error_code: str | None = None) -> None:
        self.ingest_documents.labels(source, outcome).inc()
        if error_code is not None:
            self.parse_errors.labels(source, error_code).inc()
