"""Real databases for the SQL connector's contract suite and integration tests.

``SqlHarness`` makes a throwaway schema (PostgreSQL: a schema in database ``test``; MariaDB: a
database) holding ``docs(id, title, body, readers, updated_at)`` and ``doc_acl(doc_id, identity,
kind, effect, updated_at)``, writes to it through its own read-write connection, and drops it on
``close``. ``acl="join"`` keeps the readers in ``doc_acl`` rows; ``acl="columns"`` keeps them in
``docs.readers`` (a ``text[]`` on PostgreSQL, a comma-separated string on MariaDB). Readers are
written as ``user:NAME`` / ``group:NAME`` in the column, or as ``kind`` in the join table.

``edit`` moves ``updated_at`` forward (a strictly increasing harness clock, so two edits in one
microsecond still differ); ``set_readers`` touches only the ACL (rows or column), never
``updated_at``: a permission-only change.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from ingest.connectors.contract import Connector, SourceIdentity
from ingest.connectors.sql import SqlConnector

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MARIADB_ADMIN_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
Flavor = Literal["postgresql", "mariadb"]


class SqlHarness:
    """The contract harness over a fresh schema in a real PostgreSQL or MariaDB."""

    def __init__(self, flavor: Flavor, *, acl: Literal["join", "columns"] = "join", namespace: str = "sql:test",
                 config: dict[str, object] | None = None) -> None:
        self.flavor = flavor
        self.acl = acl
        self.namespace = namespace
        self.schema = f"clr_{secrets.token_hex(4)}"
        self._next_id = 0
        self._clock = datetime.now(UTC).replace(microsecond=0)
        if flavor == "postgresql":
            self.admin: Engine = create_engine(PG_ADMIN_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
            self.url = PG_ADMIN_URL
            with self.admin.connect() as c:
                c.exec_driver_sql(f"CREATE SCHEMA {self.schema}")
                c.exec_driver_sql(f"CREATE TABLE {self.schema}.docs (id INTEGER PRIMARY KEY, title TEXT, body TEXT, "
                                  "readers TEXT[], updated_at TIMESTAMPTZ)")
                c.exec_driver_sql(f"CREATE TABLE {self.schema}.doc_acl (doc_id INTEGER, identity TEXT, kind TEXT, "
                                  "effect TEXT, updated_at TIMESTAMPTZ)")
        else:
            root = create_engine(MARIADB_ADMIN_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
            with root.connect() as c:
                c.exec_driver_sql(f"CREATE DATABASE {self.schema}")
            root.dispose()
            self.url = f"mysql+pymysql://root@127.0.0.1:3306/{self.schema}"
            self.admin = create_engine(self.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
            with self.admin.connect() as c:
                c.exec_driver_sql("CREATE TABLE docs (id INTEGER PRIMARY KEY, title VARCHAR(200), body TEXT, "
                                  "readers TEXT, updated_at DATETIME(6))")
                c.exec_driver_sql("CREATE TABLE doc_acl (doc_id INTEGER, identity VARCHAR(200), kind VARCHAR(10), "
                                  "effect VARCHAR(10), updated_at DATETIME(6))")
        self.config: dict[str, object] = {
            "url": self.url,
            "namespace": namespace,
            "query": f"SELECT id, title, body, readers, updated_at FROM {self.table('docs')}",
            "batch_docs": 2,  # small pages, so every stream crosses a page boundary
            **(config or {}),
        }
        if acl == "join":
            self.config.setdefault("acl_query", f"SELECT doc_id, identity, kind, effect FROM {self.table('doc_acl')}")
        else:
            self.config.setdefault("allow_column", "readers")

    def table(self, name: str) -> str:
        return f"{self.schema}.{name}" if self.flavor == "postgresql" else name

    def tick(self) -> datetime:
        """A strictly increasing timestamp (UTC; naive for MariaDB's DATETIME)."""
        self._clock = max(self._clock + timedelta(milliseconds=1), datetime.now(UTC))
        return self._clock if self.flavor == "postgresql" else self._clock.replace(tzinfo=None)

    def connector(self) -> Connector:
        return SqlConnector("db", self.config)

    def exec(self, sql: str, params: dict[str, object] | None = None) -> None:
        with self.admin.connect() as c:
            c.execute(text(sql), params or {})

    def _readers_value(self, readers: Sequence[SourceIdentity]) -> object:
        entries = [f"{r.kind}:{r.name}" for r in readers]
        return entries if self.flavor == "postgresql" else ",".join(entries)

    def _write_acl(self, doc_id: int, readers: Sequence[SourceIdentity]) -> None:
        if self.acl == "columns":
            self.exec(f"UPDATE {self.table('docs')} SET readers = :r WHERE id = :i",
                      {"r": self._readers_value(readers), "i": doc_id})
            return
        self.exec(f"DELETE FROM {self.table('doc_acl')} WHERE doc_id = :i", {"i": doc_id})
        for r in readers:
            self.exec(f"INSERT INTO {self.table('doc_acl')} (doc_id, identity, kind, effect, updated_at) "
                      "VALUES (:i, :n, :k, 'allow', :t)", {"i": doc_id, "n": r.name, "k": r.kind, "t": self.tick()})

    def add(self, hint: str, text: str, readers: list[SourceIdentity]) -> str:
        self._next_id += 1
        doc_id = self._next_id
        self.exec(f"INSERT INTO {self.table('docs')} (id, title, body, updated_at) VALUES (:i, :h, :b, :t)",
                  {"i": doc_id, "h": hint, "b": text, "t": self.tick()})
        self._write_acl(doc_id, readers)
        return str(doc_id)

    def edit(self, doc_id: str, text: str) -> None:
        self.exec(f"UPDATE {self.table('docs')} SET body = :b, updated_at = :t WHERE id = :i",
                  {"b": text, "t": self.tick(), "i": int(doc_id)})

    def set_readers(self, doc_id: str, readers: list[SourceIdentity]) -> None:
        self._write_acl(int(doc_id), readers)

    def remove(self, doc_id: str) -> None:
        self.exec(f"DELETE FROM {self.table('doc_acl')} WHERE doc_id = :i", {"i": int(doc_id)})
        self.exec(f"DELETE FROM {self.table('docs')} WHERE id = :i", {"i": int(doc_id)})

    def close(self) -> None:
        with self.admin.connect() as c:
            if self.flavor == "postgresql":
                c.exec_driver_sql(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
            else:
                c.exec_driver_sql(f"DROP DATABASE IF EXISTS {self.schema}")
        self.admin.dispose()
