"""Gauges read at scrape time (``/metrics``): source lag, SLA and staleness, index size."""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from core.logging import Log
from retrieval.index import ChunkIndex
from store.freshness import Freshness

log = Log("clearance.ops")


def scrape_gauges(freshness: Freshness, index: ChunkIndex) -> Iterable[Metric]:
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
