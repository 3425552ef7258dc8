"""The connector scheduler: runs each connector source's content and permission syncs at their
own intervals (``content_interval_s``, ``permission_interval_s``; permissions usually much more
often, and they never re-embed).

Run by ``clearance worker`` (in the foreground) and by ``clearance serve`` (a background thread,
``scheduler.in_serve``). Any number of processes may run one: a source is synced by whichever
takes it first (``ConnectorStore.hold``: PostgreSQL advisory lock, SQLite lease, one run per
source whatever the stream); the others skip it and try again on their next tick.

A stream is due when it never ran or its ``next_due`` has passed (set after every run to the end
of the run plus the interval). A run that starts more than one interval after it was due counts
as *missed* (the process was down, or runs take longer than the interval). Failures and missed
runs are counted per stream in the catalog and shown in the source status, ``/metrics``
(``clearance_connector_*``) and ``/readyz``: there as a non-fatal check. A failing connector
never takes the server out of rotation: the data it would bring is stale, which no restart or
rerouting fixes, while every other source is still served correctly.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from app.connectors import ConnectorSync, SyncReport
from core.logging import Log
from store.catalog import aware_utc, utcnow
from store.connectors import STREAMS, ConnectorStore

log = Log("clearance.scheduler")


@dataclass(frozen=True)
class Due:
    source: str
    stream: str
    missed: bool


class Scheduler:
    """Finds due streams and runs them, one at a time per process."""

    def __init__(self, sync: ConnectorSync) -> None:
        self.sync = sync
        self.store: ConnectorStore = sync.store
        self.settings = sync.settings.scheduler
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def due(self, now: datetime | None = None) -> list[Due]:
        now = now or utcnow()
        state = {(s.source, s.stream): s for s in self.store.streams()}
        out: list[Due] = []
        for row in self.store.sources():
            for stream in STREAMS:
                st = state.get((row.name, stream))
                next_due = aware_utc(st.next_due) if st is not None else None
                if next_due is None:
                    out.append(Due(row.name, stream, False))
                elif next_due <= now:
                    out.append(Due(row.name, stream, (now - next_due).total_seconds() > row.interval_s(stream)))
        return out

    def tick(self, now: datetime | None = None) -> list[SyncReport]:
        """Run every stream due now (those another process holds are skipped)."""
        reports: list[SyncReport] = []
        try:
            due = self.due(now)
        except Exception as exc:  # the catalog is down: try again next tick
            log.warning("scheduler.due_failed", error=type(exc).__name__)
            return reports
        for d in due:
            if self._stop.is_set():
                break
            try:
                report = self.sync.run_held(d.source, d.stream, missed=d.missed)
            except Exception as exc:  # an unknown source (deleted meanwhile), the catalog down
                log.warning("scheduler.run_failed", source=d.source, stream=d.stream, error=type(exc).__name__)
                continue
            if report is not None:
                reports.append(report)
        return reports

    def run_forever(self) -> None:
        log.info("scheduler.started", tick_s=self.settings.tick_s)
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.settings.tick_s)
        log.info("scheduler.stopped")

    def start(self) -> threading.Thread:
        """Run in a daemon thread (``clearance serve``)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run_forever, name="clearance-scheduler", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None


def connector_health(store: ConnectorStore, failing_after: int = 1, now: datetime | None = None) -> dict[str, Any]:
    """The /readyz check of connector sources (never fatal): failing and overdue streams."""
    now = now or utcnow()
    intervals = {r.name: r for r in store.sources()}
    failing, overdue, missed = [], [], {}
    for st in store.streams():
        row = intervals.get(st.source)
        if row is None:
            continue
        name = f"{st.source}/{st.stream}"
        if st.consecutive_failures >= failing_after:
            failing.append({"stream": name, "consecutive_failures": st.consecutive_failures, "error": st.last_error})
        due = aware_utc(st.next_due)
        if due is not None and (now - due).total_seconds() > row.interval_s(st.stream):
            overdue.append(name)
        if st.missed:
            missed[name] = st.missed
    problems = [f"connector stream {f['stream']} failing ({f['consecutive_failures']} in a row): {f['error']}"
                for f in failing]
    problems += [f"connector stream {n} is more than one interval overdue (is a scheduler running?)" for n in overdue]
    return {"ok": not problems, "sources": len(intervals), "failing": failing, "overdue": overdue, "missed": missed,
            "problems": problems, "fatal": False}


def connector_gauges(store: ConnectorStore) -> Iterable[Metric]:
    """Scrape-time gauges: consecutive failures per stream, unmapped identities per source."""
    failures = GaugeMetricFamily("clearance_connector_consecutive_failures",
                                 "Failed connector runs in a row (0: the last run succeeded)", labels=["source", "stream"])
    unmapped = GaugeMetricFamily("clearance_connector_unmapped_identities",
                                 "Source identities the identity map cannot resolve", labels=["source"])
    try:
        for st in store.streams():
            failures.add_metric([st.source, st.stream], float(st.consecutive_failures))
        counts: dict[str, int] = {}
        for u in store.unmapped():
            counts[u.source] = counts.get(u.source, 0) + 1
        for source, n in sorted(counts.items()):
            unmapped.add_metric([source], float(n))
        yield from (failures, unmapped)
    except Exception as exc:
        log.warning("metrics.connectors_unavailable", error=type(exc).__name__)
