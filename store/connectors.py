"""What the connector engine keeps in the catalog (``app.connectors``, ``app.scheduler``).

- ``connector_sources``: the connector behind a source of kind ``connector`` (its entry-point
  name, its JSON config, its content and permission sync intervals). Written in the same
  transaction as the source's registry row (``SourceRegistry.create``), so a connector source
  never exists half-made.
- ``connector_streams``: per source and stream (``content`` | ``permissions``): the checkpoint
  to resume from (stored only after the batch before it committed), the last run's outcome and
  report, counters of runs, failures and missed runs, when the next run is due, and on SQLite the
  lease that keeps two processes from syncing the same stream at once.
- ``unmapped_identities``: source identities the identity map could not turn into principals,
  per source, with first/last seen and how often (never silently dropped: the admin API, the CLI
  and the source status show them).

One sync per source at a time across processes, whichever its stream (``ConnectorStore.hold``):
on PostgreSQL a session advisory lock (``pg_try_advisory_lock``) held on its own connection for
the run (released by the server if the process dies); on SQLite a lease (owner, expiry) on the
source's ``content`` stream row, renewed while the run goes on, taken by a conditional UPDATE
(SQLite serialises writers). Per source, not per stream: a content run applies the ACL it read
with the content, so a permission run applying a newer ACL in between would be overwritten by
the older one, with the permission checkpoint already past the change: a revocation lost.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlmodel import Field, SQLModel, col, delete, select, update

from store.catalog import Catalog, as_utc, aware_utc, unavailable, utcnow

STREAMS = ("content", "permissions")


class ConnectorSourceRow(SQLModel, table=True):
    __tablename__ = "connector_sources"

    name: str = Field(primary_key=True)  # the source's name (source_registry.name)
    connector: str  # the entry-point name (``filesystem``, ``posix``, ``sql``, ``imap``, ...)
    config: str = "{}"  # JSON object handed to the connector factory
    content_interval_s: int = 3600
    permission_interval_s: int = 300

    @property
    def config_dict(self) -> dict[str, Any]:
        data = json.loads(self.config)
        return data if isinstance(data, dict) else {}

    def interval_s(self, stream: str) -> int:
        return self.content_interval_s if stream == "content" else self.permission_interval_s


class ConnectorStreamRow(SQLModel, table=True):
    __tablename__ = "connector_streams"

    source: str = Field(primary_key=True)
    stream: str = Field(primary_key=True)  # content | permissions
    checkpoint: str | None = None
    checkpoint_at: datetime | None = None
    last_started: datetime | None = None
    last_finished: datetime | None = None
    last_ok: datetime | None = None
    last_outcome: str | None = None  # ok | failed | partial
    last_error: str | None = None
    last_report: str = "{}"  # JSON SyncReport of the last run
    runs: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    missed: int = 0  # scheduled runs that started more than one interval late
    next_due: datetime | None = None
    lease_owner: str | None = None
    lease_expires: datetime | None = None


class UnmappedIdentityRow(SQLModel, table=True):
    __tablename__ = "unmapped_identities"

    source: str = Field(primary_key=True)
    namespace: str = Field(primary_key=True)
    kind: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    first_seen: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow)
    count: int = 0


LEASE_STREAM = "content"  # the row whose lease columns hold a source's SQLite lease


def _lock_key(source: str) -> int:
    return int.from_bytes(hashlib.sha256(f"connector\0{source}".encode()).digest()[:8], "big", signed=True)


class ConnectorStore:
    """Connector configs, checkpoints, run state, unmapped identities and stream locks."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        # PostgreSQL: the connection holding each source's advisory lock (detached from the pool:
        # a pooled connection could be reset or recycled, silently dropping the lock).
        self._locks: dict[tuple[str, str], Any] = {}

    @property
    def postgresql(self) -> bool:
        return self.catalog.engine.dialect.name == "postgresql"

    # -- sources ------------------------------------------------------------------------------
    def source(self, name: str) -> ConnectorSourceRow | None:
        with unavailable("catalog"), self.catalog.session() as s:
            return s.get(ConnectorSourceRow, name)

    def sources(self) -> list[ConnectorSourceRow]:
        with unavailable("catalog"), self.catalog.session() as s:
            return list(s.exec(select(ConnectorSourceRow).order_by(col(ConnectorSourceRow.name))).all())

    def save_source(self, row: ConnectorSourceRow, journal: Iterable[SQLModel] = ()) -> None:
        with unavailable("catalog"), self.catalog.session() as s:
            s.merge(row)
            for entry in journal:
                s.add(entry)
            s.commit()

    def forget(self, name: str) -> None:
        """Drop everything kept for a source (it was deleted)."""
        with unavailable("catalog"), self.catalog.session() as s:
            s.exec(delete(ConnectorSourceRow).where(col(ConnectorSourceRow.name) == name))  # type: ignore[call-overload]
            s.exec(delete(ConnectorStreamRow).where(col(ConnectorStreamRow.source) == name))  # type: ignore[call-overload]
            s.exec(delete(UnmappedIdentityRow).where(col(UnmappedIdentityRow.source) == name))  # type: ignore[call-overload]
            s.commit()

    # -- streams ------------------------------------------------------------------------------
    def stream(self, source: str, stream: str) -> ConnectorStreamRow:
        with unavailable("catalog"), self.catalog.session() as s:
            row = s.get(ConnectorStreamRow, (source, stream))
            return row if row is not None else ConnectorStreamRow(source=source, stream=stream)

    def streams(self, source: str | None = None) -> list[ConnectorStreamRow]:
        with unavailable("catalog"), self.catalog.session() as s:
            q = select(ConnectorStreamRow)
            if source is not None:
                q = q.where(ConnectorStreamRow.source == source)
            return list(s.exec(q.order_by(col(ConnectorStreamRow.source), col(ConnectorStreamRow.stream))).all())

    def _ensure(self, source: str, stream: str) -> None:
        with self.catalog.session() as s:
            if s.get(ConnectorStreamRow, (source, stream)) is None:
                s.add(ConnectorStreamRow(source=source, stream=stream))
                try:
                    s.commit()
                except Exception:  # another process made it first
                    s.rollback()

    def save_checkpoint(self, source: str, stream: str, checkpoint: str | None) -> None:
        """Store the checkpoint a run resumes from: only once every item before it committed."""
        with unavailable("catalog"):
            self._ensure(source, stream)
            with self.catalog.session() as s:
                s.exec(update(ConnectorStreamRow)  # type: ignore[call-overload]
                       .where(col(ConnectorStreamRow.source) == source, col(ConnectorStreamRow.stream) == stream)
                       .values(checkpoint=checkpoint, checkpoint_at=utcnow()))
                s.commit()

    def reset_checkpoint(self, source: str, stream: str | None = None) -> None:
        for st in (stream,) if stream else STREAMS:
            self.save_checkpoint(source, st, None)

    def run_started(self, source: str, stream: str, *, missed: bool) -> None:
        with unavailable("catalog"):
            self._ensure(source, stream)
            with self.catalog.session() as s:
                row = s.get(ConnectorStreamRow, (source, stream))
                assert row is not None
                row.last_started = utcnow()
                row.missed += 1 if missed else 0
                s.add(row)
                s.commit()

    def run_finished(self, source: str, stream: str, *, outcome: str, error: str | None, report: dict[str, Any],
                     next_due: datetime | None) -> None:
        with unavailable("catalog"):
            self._ensure(source, stream)
            with self.catalog.session() as s:
                row = s.get(ConnectorStreamRow, (source, stream))
                assert row is not None
                now = utcnow()
                row.last_finished, row.last_outcome, row.last_error = now, outcome, (error or None)
                row.last_report = json.dumps(report, sort_keys=True, default=str)
                row.runs += 1
                if outcome == "ok":
                    row.last_ok, row.consecutive_failures = now, 0
                else:
                    row.failures += 1
                    row.consecutive_failures += 1
                if next_due is not None:
                    row.next_due = next_due
                s.add(row)
                s.commit()

    def set_next_due(self, source: str, stream: str, when: datetime) -> None:
        with unavailable("catalog"):
            self._ensure(source, stream)
            with self.catalog.session() as s:
                s.exec(update(ConnectorStreamRow)  # type: ignore[call-overload]
                       .where(col(ConnectorStreamRow.source) == source, col(ConnectorStreamRow.stream) == stream)
                       .values(next_due=when))
                s.commit()

    # -- one run per source at a time, across processes -----------------------------------------
    @contextmanager
    def hold(self, source: str, owner: str, lease_s: float) -> Iterator[bool]:
        """Yields True when this process may sync ``source`` now (and holds it until the block
        ends), False when another process (or another thread of this one) is syncing it."""
        if self.postgresql:
            with unavailable("catalog"):
                conn = self.catalog.engine.connect()
                conn.detach()  # its own connection: closed for good at the end, never back in the pool
            try:
                key = _lock_key(source)
                got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
                conn.commit()
                if got:
                    self._locks[(source, owner)] = conn
                try:
                    yield got
                finally:
                    self._locks.pop((source, owner), None)
                    if got:
                        try:
                            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                            conn.commit()
                        except Exception:  # the connection is gone: so is the lock
                            pass
            finally:
                conn.close()
            return
        got = self._take_lease(source, LEASE_STREAM, owner, lease_s)
        try:
            yield got
        finally:
            if got:
                self._release_lease(source, LEASE_STREAM, owner)

    def _take_lease(self, source: str, stream: str, owner: str, lease_s: float) -> bool:
        with unavailable("catalog"):
            self._ensure(source, stream)
            now = utcnow()
            with self.catalog.session() as s:
                res = s.exec(update(ConnectorStreamRow)  # type: ignore[call-overload]
                             .where(col(ConnectorStreamRow.source) == source, col(ConnectorStreamRow.stream) == stream,
                                    (col(ConnectorStreamRow.lease_owner).is_(None))
                                    | (col(ConnectorStreamRow.lease_expires) < now)
                                    | (col(ConnectorStreamRow.lease_owner) == owner))
                             .values(lease_owner=owner, lease_expires=now + timedelta(seconds=lease_s)))
                s.commit()
                return bool(res.rowcount)

    def renew(self, source: str, owner: str, lease_s: float) -> bool:
        """Whether ``owner`` still holds ``source``: on SQLite extends its lease (False when the
        lease expired and another owner took it); on PostgreSQL checks the advisory lock is still
        held by the lock connection's backend (``pg_locks``; False when that connection dropped).
        The engine stops a run that lost it before saving any checkpoint."""
        if self.postgresql:
            conn = self._locks.get((source, owner))
            if conn is None:
                return False
            key = _lock_key(source) & 0xFFFFFFFFFFFFFFFF
            try:
                held = conn.execute(text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted "
                    "AND classid = :hi AND objid = :lo AND objsubid = 1"),
                    {"hi": key >> 32, "lo": key & 0xFFFFFFFF}).scalar()
                conn.commit()
            except Exception:  # the lock connection is gone, and the lock with it
                return False
            return bool(held)
        with unavailable("catalog"), self.catalog.session() as s:
            res = s.exec(update(ConnectorStreamRow)  # type: ignore[call-overload]
                         .where(col(ConnectorStreamRow.source) == source, col(ConnectorStreamRow.stream) == LEASE_STREAM,
                                col(ConnectorStreamRow.lease_owner) == owner)
                         .values(lease_expires=utcnow() + timedelta(seconds=lease_s)))
            s.commit()
            return bool(res.rowcount)

    def _release_lease(self, source: str, stream: str, owner: str) -> None:
        try:
            with self.catalog.session() as s:
                s.exec(update(ConnectorStreamRow)  # type: ignore[call-overload]
                       .where(col(ConnectorStreamRow.source) == source, col(ConnectorStreamRow.stream) == stream,
                              col(ConnectorStreamRow.lease_owner) == owner)
                       .values(lease_owner=None, lease_expires=None))
                s.commit()
        except Exception:  # the lease expires on its own
            pass

    # -- unmapped identities --------------------------------------------------------------------
    def record_unmapped(self, source: str, seen: dict[tuple[str, str, str], int], at: datetime | None = None) -> None:
        """Count identities (namespace, kind, name) the map could not resolve during one run."""
        if not seen:
            return
        now = as_utc(at or utcnow())
        with unavailable("catalog"), self.catalog.session() as s:
            for (namespace, kind, name), n in sorted(seen.items()):
                row = s.get(UnmappedIdentityRow, (source, namespace, kind, name))
                if row is None:
                    row = UnmappedIdentityRow(source=source, namespace=namespace, kind=kind, name=name,
                                              first_seen=now, last_seen=now, count=0)
                row.last_seen = now
                row.count += n
                s.add(row)
            s.commit()

    def clear_unmapped(self, source: str, mapped: Iterable[tuple[str, str, str]]) -> None:
        """Forget identities that map now (the map was extended)."""
        keys = list(mapped)
        if not keys:
            return
        with unavailable("catalog"), self.catalog.session() as s:
            for namespace, kind, name in keys:
                row = s.get(UnmappedIdentityRow, (source, namespace, kind, name))
                if row is not None:
                    s.delete(row)
            s.commit()

    def unmapped(self, source: str | None = None) -> list[UnmappedIdentityRow]:
        with unavailable("catalog"), self.catalog.session() as s:
            q = select(UnmappedIdentityRow)
            if source is not None:
                q = q.where(UnmappedIdentityRow.source == source)
            return list(s.exec(q.order_by(col(UnmappedIdentityRow.source), col(UnmappedIdentityRow.namespace),
                                          col(UnmappedIdentityRow.kind), col(UnmappedIdentityRow.name))).all())


def stream_dict(row: ConnectorStreamRow) -> dict[str, Any]:
    def iso(d: datetime | None) -> str | None:
        a = aware_utc(d)
        return a.isoformat() if a else None

    return {"stream": row.stream, "checkpoint_at": iso(row.checkpoint_at), "has_checkpoint": row.checkpoint is not None,
            "last_started": iso(row.last_started), "last_finished": iso(row.last_finished), "last_ok": iso(row.last_ok),
            "last_outcome": row.last_outcome, "last_error": row.last_error, "last_report": json.loads(row.last_report),
            "runs": row.runs, "failures": row.failures, "consecutive_failures": row.consecutive_failures,
            "missed": row.missed, "next_due": iso(row.next_due)}


def unmapped_dict(row: UnmappedIdentityRow) -> dict[str, Any]:
    first, last = aware_utc(row.first_seen), aware_utc(row.last_seen)
    return {"namespace": row.namespace, "kind": row.kind, "name": row.name, "count": row.count,
            "first_seen": first.isoformat() if first else None, "last_seen": last.isoformat() if last else None}
