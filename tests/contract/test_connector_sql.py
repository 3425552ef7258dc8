"""The connector contract suite on ``SqlConnector`` against real PostgreSQL and MariaDB, with
readers in a join table and in an ACL column, plus the SQL-specific rules: the session is
read-only, equal timestamps never lose a row across pages, a revoked (deleted) ACL row reaches
permissions(cp), a bad ACL row makes its document private, and the password never shows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from core.errors import BackendUnavailableError, ConfigError
from ingest.connectors.contract import SourceIdentity
from ingest.connectors.sql import DEFAULT_MAX_DOCUMENT_BYTES, SqlConnector
from testkit.connector_contract import ConnectorContract, drain
from testkit.harness_sql import SqlHarness

FLAVORS = ("postgresql", "mariadb")


class TestSqlConnectorJoinTable(ConnectorContract):
    @pytest.fixture(params=FLAVORS)
    def harness(self, request: pytest.FixtureRequest) -> Iterator[SqlHarness]:
        h = SqlHarness(request.param, acl="join")
        yield h
        h.close()


class TestSqlConnectorAclColumn(ConnectorContract):
    @pytest.fixture(params=FLAVORS)
    def harness(self, request: pytest.FixtureRequest) -> Iterator[SqlHarness]:
        h = SqlHarness(request.param, acl="columns")
        yield h
        h.close()


@pytest.fixture(params=FLAVORS)
def harness(request: pytest.FixtureRequest) -> Iterator[SqlHarness]:
    h = SqlHarness(request.param, acl="join")
    yield h
    h.close()


def ident(kind: str, name: str) -> SourceIdentity:
    return SourceIdentity("user" if kind == "user" else "group", name, "sql:test")


def test_the_session_is_read_only(harness: SqlHarness) -> None:
    harness.add("a", "alpha", [ident("user", "alice")])
    c = SqlConnector("db", harness.config)
    try:
        conn = c._connection()
        with pytest.raises(DBAPIError):
            conn.exec_driver_sql(f"DELETE FROM {harness.table('docs')}")
        conn.rollback()
    finally:
        c.close()
    assert len(SqlConnector("db", harness.config).listing()) == 1


def test_a_writing_query_fails_in_the_database() -> None:
    h = SqlHarness("postgresql")
    try:
        h.add("a", "alpha", [ident("user", "alice")])
        cfg = {**h.config, "query": f"WITH gone AS (DELETE FROM {h.table('docs')} RETURNING *) "
                                    "SELECT id, title, body, updated_at FROM gone"}
        c = SqlConnector("db", cfg)
        with pytest.raises(BackendUnavailableError) as err:
            drain(c.documents(None), None)
        c.close()
        assert err.value.code == "source_query_failed"
        assert SqlConnector("db", h.config).listing() == ["1"]
    finally:
        h.close()


def test_equal_timestamps_across_pages_lose_no_row(harness: SqlHarness) -> None:
    """Five rows share one updated_at; pages of two still yield each exactly once, and a row
    added later with the same timestamp and a higher id comes from the checkpoint."""
    t = harness.tick()
    for i in range(1, 6):
        harness.exec(f"INSERT INTO {harness.table('docs')} (id, title, body, updated_at) VALUES (:i, 't', 'b', :t)",
                     {"i": i, "t": t})
    c = SqlConnector("db", harness.config)
    batches = list(c.documents(None))
    assert [len(b.items) for b in batches] == [2, 2, 1]
    assert [d.doc_id for b in batches for d in b.items] == ["1", "2", "3", "4", "5"]
    cp = batches[-1].checkpoint
    harness.exec(f"INSERT INTO {harness.table('docs')} (id, title, body, updated_at) VALUES (6, 't', 'b', :t)", {"t": t})
    docs, _ = drain(c.documents(cp), cp)
    assert [d.doc_id for d in docs] == ["6"]
    resumed, _ = drain(c.documents(batches[0].checkpoint), None)  # a crash after the first page replays the rest
    assert [d.doc_id for d in resumed] == ["3", "4", "5", "6"]
    c.close()


def test_a_deleted_acl_row_is_a_permission_change(harness: SqlHarness) -> None:
    doc = harness.add("a", "alpha", [ident("user", "alice"), ident("group", "eng")])
    c = SqlConnector("db", harness.config)
    _, pcp = drain(c.permissions(None), None)
    harness.exec(f"DELETE FROM {harness.table('doc_acl')} WHERE identity = 'alice'")
    changes, pcp = drain(c.permissions(pcp), pcp)
    assert [(ch.doc_id, ch.acl.allow) for ch in changes] == [(doc, frozenset({ident("group", "eng")}))]
    harness.exec(f"INSERT INTO {harness.table('doc_acl')} (doc_id, identity, kind, effect) VALUES (1, 'eng', 'group', 'deny')")
    changes, _ = drain(c.permissions(pcp), pcp)
    assert changes[0].acl.allow == frozenset() and ident("group", "eng") in changes[0].acl.deny
    c.close()


def test_an_unknown_acl_kind_or_effect_makes_the_document_private(harness: SqlHarness) -> None:
    harness.add("a", "alpha", [ident("user", "alice")])
    harness.exec(f"INSERT INTO {harness.table('doc_acl')} (doc_id, identity, kind, effect) VALUES (1, 'bob', 'user', 'maybe')")
    c = SqlConnector("db", harness.config)
    docs, _ = drain(c.documents(None), None)
    assert docs[0].acl.allow == frozenset()
    assert c.problems
    c.close()


def test_rows_without_updated_at_are_not_in_the_source(harness: SqlHarness) -> None:
    harness.add("a", "alpha", [])
    harness.exec(f"INSERT INTO {harness.table('docs')} (id, title, body) VALUES (99, 'x', 'y')")
    c = SqlConnector("db", harness.config)
    assert c.listing() == ["1"]
    assert [d.doc_id for d in drain(c.documents(None), None)[0]] == ["1"]
    c.close()


def test_rendering_and_provenance(harness: SqlHarness) -> None:
    harness.add("Quarterly plan", "Revenue grows.", [])
    c = SqlConnector("db", {**harness.config, "metadata_columns": ["title"]})
    (doc,) = drain(c.documents(None), None)[0]
    assert doc.content == b"# Quarterly plan\n\nRevenue grows.\n"
    assert doc.filename == "1.md" and doc.title == "Quarterly plan" and doc.metadata == {"title": "Quarterly plan"}
    assert doc.modified_at.utcoffset() == timedelta(0)
    assert doc.uri.endswith("#id=1") and "+psycopg" not in doc.uri and "+pymysql" not in doc.uri
    c.close()


def test_the_password_comes_from_the_environment_and_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    h = SqlHarness("postgresql")  # trust authentication: any password is accepted
    try:
        h.add("a", "alpha", [])
        monkeypatch.setenv("CLEARANCE_CONNECTOR_SECRET_TEST_SQL_PW", "s3cret-pw-123")
        c = SqlConnector("db", {**h.config, "password_env": "CLEARANCE_CONNECTOR_SECRET_TEST_SQL_PW"})
        (doc,) = drain(c.documents(None), None)[0]
        assert "s3cret" not in doc.uri
        c.close()
        bad = SqlConnector("db", {**h.config, "url": "postgresql+psycopg://postgres:s3cret-pw-123@127.0.0.1:1/test"})
        with pytest.raises(BackendUnavailableError) as err:
            bad.listing()
        assert "s3cret" not in str(err.value) and "127.0.0.1" not in str(err.value)
        with pytest.raises(ConfigError, match="CLEARANCE_CONNECTOR_SECRET_TEST_MISSING"):
            SqlConnector("db", {**h.config, "password_env": "CLEARANCE_CONNECTOR_SECRET_TEST_MISSING"})
    finally:
        h.close()


def test_config_errors() -> None:
    base = {"url": "postgresql+psycopg://postgres@127.0.0.1/test", "query": "SELECT 1"}
    for bad in ({}, {**base, "query": "DELETE FROM x"}, {**base, "id_column": "id; drop"},
                {**base, "url": "oracle://x/y"}, {**base, "format": "pdf"}, {**base, "nope": 1}):
        with pytest.raises(ConfigError):
            SqlConnector("db", bad)
    c = SqlConnector("db", base)
    with pytest.raises(ConfigError):
        next(c.documents("posix1:zzz"))


def test_a_statement_over_its_timeout_is_cancelled(harness: SqlHarness) -> None:
    harness.add("a", "alpha", [])
    sleep = "pg_sleep(3)" if harness.flavor == "postgresql" else "SLEEP(3)"
    cfg = {**harness.config, "statement_timeout_s": 1,
           "query": f"SELECT id, title, body, updated_at FROM {harness.table('docs')} WHERE {sleep} IS NOT NULL"}
    c = SqlConnector("db", cfg)
    try:
        with pytest.raises(BackendUnavailableError) as err:
            c.listing()
        assert err.value.code == "backend_unavailable"  # the engine retries it
    finally:
        c.close()


def test_a_configured_column_the_query_lacks_is_a_config_error(harness: SqlHarness) -> None:
    harness.add("a", "alpha", [])
    c = SqlConnector("db", {**harness.config, "text_columns": ["body", "summary"]})
    try:
        with pytest.raises(ConfigError, match="summary"):
            drain(c.documents(None), None)
    finally:
        c.close()


def test_acl_columns_as_json_or_comma_lists_with_a_deny_column() -> None:
    h = SqlHarness("mariadb", acl="columns")
    try:
        h.exec("ALTER TABLE docs ADD COLUMN blocked TEXT")
        h.exec("INSERT INTO docs (id, title, body, readers, blocked, updated_at) VALUES "
               "(1, 't', 'b', '[\"user:alice\", \"group:eng\", \"carol\"]', 'user:alice', :t), "
               "(2, 't', 'b', 'group:eng, dave', NULL, :t)", {"t": h.tick()})
        cfg = {**h.config, "query": "SELECT id, title, body, readers, blocked, updated_at FROM docs",
               "deny_column": "blocked", "acl_default_kind": "group"}
        c = SqlConnector("db", cfg)
        docs = {d.doc_id: d.acl for d in drain(c.documents(None), None)[0]}
        c.close()
        assert docs["1"].allow == {ident("group", "eng"), ident("group", "carol")}
        assert docs["1"].deny == {ident("user", "alice")}
        assert docs["2"].allow == {ident("group", "eng"), ident("group", "dave")} and not docs["2"].deny
    finally:
        h.close()


def test_discovered_through_its_entry_point() -> None:
    from ingest.connectors.contract import load

    assert load("sql") is SqlConnector


def test_password_env_may_name_only_connector_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever configures a source must not make the connector send another server secret (the
    SCIM token, here) as the password to a host of their choosing: refused at construction."""
    monkeypatch.setenv("CLEARANCE_SCIM_TOKEN", "scim-token-value")
    base = {"url": "postgresql+psycopg://postgres@127.0.0.1/test", "query": "SELECT 1"}
    for name in ("CLEARANCE_SCIM_TOKEN", "HOME", "clearance_connector_secret_x", "CLEARANCE_CONNECTOR_SECRET_"):
        with pytest.raises(ConfigError, match="CLEARANCE_CONNECTOR_SECRET_<NAME>") as err:
            SqlConnector("db", {**base, "password_env": name})
        assert "scim-token-value" not in str(err.value)


def test_sqlite_urls_need_local_file(tmp_path: Path) -> None:
    """A sqlite URL reads a file of the Clearance host (its own catalog, say), outside any allowed
    root: refused unless the operator's local CLI sets local_file (the API refuses that key)."""
    path = tmp_path / "notes.db"
    admin = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    with admin.begin() as db:
        db.exec_driver_sql("CREATE TABLE docs (id INTEGER PRIMARY KEY, title TEXT, body TEXT, updated_at TIMESTAMP)")
        db.exec_driver_sql("INSERT INTO docs VALUES (1, 'one', 'first note', '2026-01-01 00:00:00')")
    admin.dispose()
    config: dict[str, object] = {"url": f"sqlite:///{path}", "query": "SELECT id, title, body, updated_at FROM docs"}
    with pytest.raises(ConfigError, match="local_file"):
        SqlConnector("db", config)
    with pytest.raises(ConfigError, match="local_file"):
        SqlConnector("db", {**config, "local_file": "yes"})
    c = SqlConnector("db", {**config, "local_file": True})
    try:
        docs, _ = drain(c.documents(None), None)
        assert [d.doc_id for d in docs] == ["1"] and docs[0].acl.allow == frozenset()
    finally:
        c.close()


def test_an_oversized_row_is_skipped_and_reported(harness: SqlHarness) -> None:
    """A row over max_document_bytes is never built into a document, and never dropped silently:
    it is in skipped with its id and reason; the rows around it (same page) still come."""
    small = harness.add("small", "fine", [ident("user", "ann")])
    big = harness.add("big", "x" * 5000, [ident("user", "ann")])
    tail = harness.add("tail", "also fine", [ident("user", "ann")])
    c = SqlConnector("db", {**harness.config, "max_document_bytes": 1000})
    try:
        docs, cp = drain(c.documents(None), None)
        assert [d.doc_id for d in docs] == [small, tail]
        assert [doc_id for doc_id, _ in c.skipped] == [big] and "max_document_bytes 1000" in c.skipped[0][1]
        assert drain(c.documents(cp), cp)[0] == [] and c.skipped == []
        assert big in c.listing()
    finally:
        c.close()


def test_max_document_bytes_is_bounded() -> None:
    base = {"url": "postgresql+psycopg://postgres@127.0.0.1/test", "query": "SELECT 1"}
    assert SqlConnector("db", base).max_document_bytes == DEFAULT_MAX_DOCUMENT_BYTES == 1024 * 1024
    assert SqlConnector("db", {**base, "max_document_bytes": 50 * 1024 * 1024}).max_document_bytes == 50 * 1024 * 1024
    for bad in (0, -1, True, "1", 50 * 1024 * 1024 + 1):
        with pytest.raises(ConfigError, match="max_document_bytes"):
            SqlConnector("db", {**base, "max_document_bytes": bad})
