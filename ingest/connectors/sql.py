"""A SQL database as a connector: the rows of one query become documents, readers come from ACL
columns of the same rows or from a join-table query. PostgreSQL (psycopg), MariaDB/MySQL (PyMySQL)
and, for the operator's local CLI only, SQLite are supported through SQLAlchemy.

Deployment advice (defence in depth): connect as a database role that holds ``SELECT`` on the
tables the queries read and nothing else (no ``INSERT/UPDATE/DELETE``, no ownership, no
``SUPERUSER``/``FILE``/``pg_read_server_files``, no access to other schemas). The read-only session
below stops writes; the grants are what stop a query from reading more than it should.

Invariants:

- **Read-only.** Every session is made read-only before the first query and checked: PostgreSQL
  ``default_transaction_read_only=on`` (``SHOW transaction_read_only`` must say ``on``),
  MariaDB/MySQL ``SET SESSION TRANSACTION READ ONLY`` (``@@transaction_read_only`` must be 1),
  SQLite ``PRAGMA query_only``. A query that tries to write (a data-modifying CTE, a function
  with side effects) fails in the database. Each statement has a timeout
  (``statement_timeout_s``); every read is bounded: pages of ``batch_docs`` rows by keyset, ids
  and ACL rows fetched in partitions from a server-side cursor.
- **Secrets stay secret.** A password comes from the environment variable ``password_env`` names
  (or the URL); it is never logged, never in an error message and never in a document's ``uri``.
  ``password_env`` must be ``CLEARANCE_CONNECTOR_SECRET_<NAME>`` (``ingest.connectors.secrets``):
  whoever configures a source must not be able to make the connector send the server's other
  secrets (the SCIM token, an OIDC client secret) to a database host of their choosing.
- **No local files through a URL.** A ``sqlite`` URL names a file on the Clearance host (the
  catalog itself, say), outside any ``allowed_roots``; it is refused unless the config says
  ``"local_file": true``. Only the operator's local CLI may set that key; the API refuses sources
  that set it (``app/sources.py``), so an API admin cannot index the server's own files.
- **Bounded rows.** A row whose rendered document exceeds ``max_document_bytes`` (1 MiB, at most
  50 MiB) is not turned into a document: it is recorded in ``skipped`` as ``(doc_id, reason)`` and
  logged, never silently dropped (the checkpoint passes it; it is read again once it changes).
- **Fail closed.** No ACL configured: every row is private. An ACL row whose ``kind`` or
  ``effect`` is not one of ``user|group`` / ``allow|deny`` makes its document private. Column
  entries are ``user:NAME``, ``group:NAME`` or a bare name of ``acl_default_kind``.

Config:

- ``url`` (SQLAlchemy URL: ``postgresql+psycopg://u@h/db``, ``mysql+pymysql://u@h/db``; ``sqlite:///path``
  only with ``local_file: true``), optional ``password_env`` (``CLEARANCE_CONNECTOR_SECRET_<NAME>``);
- ``query``: a ``SELECT`` returning at least ``id_column`` (``id``), ``updated_at_column``
  (``updated_at``), ``title_column`` (``title``, may be ``null``), ``text_columns`` (``["body"]``),
  optional ``metadata_columns`` and ``allow_column`` / ``deny_column`` (a PostgreSQL array, a
  JSON array or a comma-separated string). Rows whose updated-at is ``NULL`` are not part of the
  source;
- ``acl_query`` (optional): a ``SELECT`` returning ``doc_id, identity, kind, effect`` (alias your
  columns to these names), one row per grant;
- ``namespace`` (``sql:<database>``), ``batch_docs`` (100), ``statement_timeout_s`` (30),
  ``format`` (``md`` or ``txt``: the rendering is ``# title`` + the text columns),
  ``uri_template`` (e.g. ``https://crm.example/tickets/{id}``; default: the URL without
  credentials plus ``#id=...``), ``acl_default_kind`` (``user``), ``max_document_bytes`` (1 MiB,
  at most 50 MiB), ``local_file`` (false; see above).

Streams and checkpoints:

- ``documents(since)``: rows with ``(updated_at, id)`` after the checkpoint, in that order, by
  keyset pages (``WHERE updated_at > :t OR (updated_at = :t AND id > :i) ORDER BY updated_at, id
  LIMIT n``); the checkpoint is the last row's pair, so equal timestamps never lose a row. The
  updated-at column must move forward when a row's content changes and be set no later than the
  commit that makes the row visible: a row committed with an updated-at *older* than a run that
  already passed it is seen by the next full read, not incrementally (a trigger setting it to
  ``now()`` at update time, with short transactions, is the usual way).
- ``permissions(since)``: each run reads every document's whole ACL (ACL columns and the
  ``acl_query`` rows, both streamed) and yields the documents whose ACL fingerprint differs from
  the checkpoint's (``{doc_id: fingerprint}``, zlib-compressed). This catches inserted, updated
  *and deleted* ACL rows (a revoke leaves no updated-at behind), and never touches content.
- ``listing()``: every id (streamed); the engine reconciles deleted rows from it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import bindparam, create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from core.errors import BackendUnavailableError, ConfigError
from core.logging import Log
from ingest.connectors.contract import Batch, ConnectorDocument, IdentityKind, PermissionChange, SourceAcl, SourceIdentity
from ingest.connectors.secrets import check_secret_name, read_secret

log = Log("clearance.connectors.sql")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEYS = {"url", "password_env", "query", "id_column", "title_column", "text_columns", "updated_at_column",
         "metadata_columns", "allow_column", "deny_column", "acl_default_kind", "acl_query", "namespace",
         "batch_docs", "statement_timeout_s", "format", "uri_template", "max_document_bytes", "local_file"}
DEFAULT_MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_DOCUMENT_BYTES_LIMIT = 50 * 1024 * 1024
_CP_DOCS = "sqldocs1:"
_CP_PERMS = "sqlperm1:"
_SRC = "clearance_src"
_ACL = "clearance_acl"


def _str(config: Mapping[str, object], key: str, default: str | None = None, *, required: bool = False) -> str | None:
    value = config.get(key, default)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"sql connector config {key!r} must be a non-empty string", code="invalid_source")
    return value


def _column(config: Mapping[str, object], key: str, default: str | None) -> str | None:
    value = _str(config, key, default)
    if value is not None and not _IDENT.match(value):
        raise ConfigError(f"sql connector config {key!r} must be a plain column name", code="invalid_source")
    return value


def _columns(config: Mapping[str, object], key: str, default: Sequence[str]) -> tuple[str, ...]:
    value = config.get(key, list(default))
    if not isinstance(value, list | tuple) or not all(isinstance(c, str) and _IDENT.match(c) for c in value):
        raise ConfigError(f"sql connector config {key!r} must be a list of plain column names", code="invalid_source")
    return tuple(value)


def _select(config: Mapping[str, object], key: str, *, required: bool) -> str | None:
    value = _str(config, key, required=required)
    if value is None:
        return None
    value = value.strip().rstrip(";").strip()
    if not re.match(r"^(select|with)\b", value, re.IGNORECASE):
        raise ConfigError(f"sql connector config {key!r} must be a SELECT statement", code="invalid_source")
    return value


def _int(config: Mapping[str, object], key: str, default: int) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"sql connector config {key!r} must be a positive integer", code="invalid_source")
    return value


def _fingerprint(acl: SourceAcl) -> str:
    def names(ids: frozenset[SourceIdentity]) -> list[str]:
        return sorted(f"{i.kind}:{i.name}" for i in ids)

    canonical = json.dumps({"a": names(acl.allow), "d": names(acl.deny)}, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _encode_value(value: object) -> list[object]:
    """A keyset value as JSON that restores to the same Python type (what the driver binds)."""
    if isinstance(value, datetime):
        return ["dt", value.isoformat()]
    if isinstance(value, date):
        return ["d", value.isoformat()]
    if isinstance(value, bool | int | float | str):
        return ["v", value]
    return ["s", str(value)]  # uuid, decimal: compared as text by the database


def _decode_value(raw: object) -> object:
    if not isinstance(raw, list) or len(raw) != 2 or raw[0] not in ("dt", "d", "v", "s"):
        raise ConfigError("the stored content checkpoint is corrupt", code="bad_checkpoint")
    kind, value = raw
    try:
        if kind == "dt":
            return datetime.fromisoformat(str(value))
        if kind == "d":
            return date.fromisoformat(str(value))
    except ValueError as exc:
        raise ConfigError("the stored content checkpoint is corrupt", code="bad_checkpoint") from exc
    return value


def _aware(value: object) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # naive DATETIME: UTC
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):  # SQLite keeps times as ISO text (its columns have no type through a subquery)
        return _aware(datetime.fromisoformat(value))
    raise ValueError(f"updated-at value of type {type(value).__name__} is not a time")


def _entries(value: object) -> list[str]:
    """An ACL column's value: an array, a JSON array or a comma-separated string."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if v is not None and str(v).strip()]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    s = str(value).strip()
    if s.startswith("["):
        try:
            parsed = json.loads(s)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return [str(v).strip() for v in parsed if v is not None and str(v).strip()]
    return [p.strip() for p in s.split(",") if p.strip()]


class _Acc:
    """One document's ACL being assembled; ``broken`` makes it private."""

    __slots__ = ("allow", "deny", "broken")

    def __init__(self) -> None:
        self.allow: set[SourceIdentity] = set()
        self.deny: set[SourceIdentity] = set()
        self.broken = False

    def acl(self) -> SourceAcl:
        if self.broken:
            return SourceAcl()
        return SourceAcl(frozenset(self.allow - self.deny), frozenset(self.deny))


class SqlConnector:
    """The rows of one ``SELECT``; doc ids are the id column's values as text."""

    def __init__(self, name: str, config: Mapping[str, object]) -> None:
        unknown = set(config) - _KEYS
        if unknown:
            raise ConfigError(f"unknown sql connector config keys: {', '.join(sorted(unknown))}", code="invalid_source")
        raw_url = _str(config, "url", required=True)
        try:
            url = make_url(str(raw_url))
        except ArgumentError as exc:
            raise ConfigError("sql connector config 'url' is not a SQLAlchemy URL", code="invalid_source") from exc
        backend = url.get_backend_name()
        if backend not in ("postgresql", "mysql", "mariadb", "sqlite"):
            raise ConfigError(f"sql connector: unsupported database {backend!r} (postgresql, mysql, mariadb, sqlite)",
                              code="invalid_source")
        local_file = config.get("local_file", False)
        if not isinstance(local_file, bool):
            raise ConfigError("sql connector config 'local_file' must be true or false", code="invalid_source")
        if backend == "sqlite" and not local_file:
            raise ConfigError("sql connector: a sqlite URL reads a file of the Clearance host; it needs config "
                              "'local_file': true, which only the operator's local CLI may set", code="invalid_source")
        password_env = _str(config, "password_env")
        if password_env is not None:
            url = url.set(password=read_secret(check_secret_name(password_env)))
        limit = _int(config, "max_document_bytes", DEFAULT_MAX_DOCUMENT_BYTES)
        if limit > MAX_DOCUMENT_BYTES_LIMIT:
            raise ConfigError(f"sql connector config 'max_document_bytes' must be at most {MAX_DOCUMENT_BYTES_LIMIT}",
                              code="invalid_source")
        self.max_document_bytes = limit
        self.name = name
        self._url: URL = url
        self.backend = backend
        self.query = str(_select(config, "query", required=True))
        self.acl_query = _select(config, "acl_query", required=False)
        self.id_column = str(_column(config, "id_column", "id"))
        self.updated_at_column = str(_column(config, "updated_at_column", "updated_at"))
        self.title_column = _column(config, "title_column", "title") if config.get("title_column", "title") is not None else None
        self.text_columns = _columns(config, "text_columns", ["body"])
        self.metadata_columns = _columns(config, "metadata_columns", [])
        self.allow_column = _column(config, "allow_column", None)
        self.deny_column = _column(config, "deny_column", None)
        kind = config.get("acl_default_kind", "user")
        if kind not in ("user", "group"):
            raise ConfigError("acl_default_kind must be 'user' or 'group'", code="invalid_source")
        self.acl_default_kind: IdentityKind = "user" if kind == "user" else "group"
        namespace = _str(config, "namespace", f"sql:{url.database or url.host or 'db'}")
        self.namespace = str(namespace)
        self.batch_docs = _int(config, "batch_docs", 100)
        self.statement_timeout_s = _int(config, "statement_timeout_s", 30)
        fmt = config.get("format", "md")
        if fmt not in ("md", "txt"):
            raise ConfigError("format must be 'md' or 'txt'", code="invalid_source")
        self.format = str(fmt)
        self.uri_template = _str(config, "uri_template")
        safe = url.set(drivername=self.backend, password=None, query={})
        self._safe_url = safe.render_as_string(hide_password=True)
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        self.problems: list[str] = []  # per-run notes (no values from the database)
        self.skipped: list[tuple[str, str]] = []  # (doc_id, reason): rows not turned into documents

    # -- connection ---------------------------------------------------------------------------
    def _make_engine(self) -> Engine:
        timeout_ms = self.statement_timeout_s * 1000
        connect_args: dict[str, Any] = {}
        if self.backend == "postgresql":
            connect_args["options"] = f"-c default_transaction_read_only=on -c statement_timeout={timeout_ms}"
            connect_args["connect_timeout"] = 10
        elif self.backend in ("mysql", "mariadb"):
            connect_args.update(connect_timeout=10, read_timeout=self.statement_timeout_s + 5)
        engine = create_engine(self._url, poolclass=NullPool, connect_args=connect_args)
        backend, timeout_s = self.backend, self.statement_timeout_s

        @event.listens_for(engine, "connect")
        def _read_only(dbapi_conn: Any, _record: Any) -> None:  # every session, before any query
            cur = dbapi_conn.cursor()
            try:
                if backend in ("mysql", "mariadb"):
                    cur.execute("SET SESSION TRANSACTION READ ONLY")
                    try:
                        cur.execute(f"SET SESSION max_statement_time = {int(timeout_s)}")  # MariaDB
                    except Exception:  # noqa: BLE001 - MySQL names it differently
                        cur.execute(f"SET SESSION max_execution_time = {int(timeout_s) * 1000}")
                elif backend == "sqlite":
                    cur.execute("PRAGMA query_only = ON")
            finally:
                cur.close()

        return engine

    def _check_read_only(self, conn: Connection) -> None:
        if self.backend == "postgresql":
            ok = conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "on"
        elif self.backend in ("mysql", "mariadb"):
            try:
                ok = int(conn.exec_driver_sql("SELECT @@session.transaction_read_only").scalar() or 0) == 1
            except DBAPIError:
                ok = int(conn.exec_driver_sql("SELECT @@session.tx_read_only").scalar() or 0) == 1
        else:
            ok = int(conn.exec_driver_sql("PRAGMA query_only").scalar() or 0) == 1
        conn.rollback()
        if not ok:
            raise ConfigError(f"source {self.name}: the database session could not be made read-only", code="not_read_only")

    def _connection(self) -> Connection:
        if self._conn is None:
            if self._engine is None:
                self._engine = self._make_engine()
            try:
                conn = self._engine.connect()
            except SQLAlchemyError as exc:
                raise BackendUnavailableError(  # code backend_unavailable: the engine retries it
                    f"source {self.name}: cannot connect to its {self.backend} database ({self._cause(exc)})") from None
            try:
                self._check_read_only(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    @staticmethod
    def _cause(exc: BaseException) -> str:
        orig = getattr(exc, "orig", None)
        return type(orig or exc).__name__

    def _q(self, name: str) -> str:
        conn = self._connection()
        return conn.dialect.identifier_preparer.quote(name)

    def _run(self, sql: str, params: Mapping[str, object] | None = None, *, expanding: Iterable[str] = (),
             stream: bool = False) -> Iterator[Any]:
        """Rows of one statement, read in partitions of ``batch_docs`` from a server-side cursor
        when ``stream``. Database errors become ``BackendUnavailableError`` naming only the class."""
        conn = self._connection()
        stmt = text(sql)
        for key in expanding:
            stmt = stmt.bindparams(bindparam(key, expanding=True))
        try:
            if stream:
                result = conn.execution_options(stream_results=True, max_row_buffer=self.batch_docs).execute(stmt, dict(params or {}))
                for part in result.partitions(self.batch_docs):
                    yield from part
            else:
                yield from conn.execute(stmt, dict(params or {})).fetchall()  # a bounded page (LIMIT)
        except DBAPIError as exc:
            try:
                conn.rollback()
            except SQLAlchemyError:
                pass  # the connection is gone; close() disposes of it
            # A lost connection or a timeout is worth a retry (backend_unavailable); a query the
            # database refuses (syntax, a write in a read-only session) is not.
            retry = isinstance(exc, OperationalError) or exc.connection_invalidated
            raise BackendUnavailableError(f"source {self.name}: the query failed ({self._cause(exc)})",
                                          code="backend_unavailable" if retry else "source_query_failed") from None

    # -- rows -> documents --------------------------------------------------------------------
    def _identity(self, entry: str) -> SourceIdentity:
        kind, sep, name = entry.partition(":")
        if sep and kind in ("user", "group") and name:
            return SourceIdentity("user" if kind == "user" else "group", name, self.namespace)
        return SourceIdentity(self.acl_default_kind, entry, self.namespace)

    def _column_acl(self, row: Mapping[str, Any], acc: _Acc) -> None:
        if self.allow_column:
            acc.allow |= {self._identity(e) for e in _entries(row.get(self.allow_column))}
        if self.deny_column:
            acc.deny |= {self._identity(e) for e in _entries(row.get(self.deny_column))}

    def _acl_row(self, acc: _Acc, identity: object, kind: object, effect: object) -> None:
        k = str(kind or "").strip().lower()
        e = str(effect or "").strip().lower()
        name = str(identity or "").strip()
        if k not in ("user", "group") or e not in ("allow", "deny") or not name:
            acc.broken = True
            return
        ident = SourceIdentity("user" if k == "user" else "group", name, self.namespace)
        (acc.allow if e == "allow" else acc.deny).add(ident)

    def _acl_sql(self) -> str:
        cols = ", ".join(f"{_ACL}.{self._q(c)}" for c in ("doc_id", "identity", "kind", "effect"))
        return f"SELECT {cols} FROM ({self.acl_query}) AS {_ACL}"

    def _acls_for(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, _Acc]:
        accs = {str(r[self.id_column]): _Acc() for r in rows}
        for r in rows:
            self._column_acl(r, accs[str(r[self.id_column])])
        if self.acl_query and rows:
            sql = f"{self._acl_sql()} WHERE {_ACL}.{self._q('doc_id')} IN :ids"
            ids = [r[self.id_column] for r in rows]
            for doc_id, identity, kind, effect in self._run(sql, {"ids": ids}, expanding=("ids",)):
                acc = accs.get(str(doc_id))
                if acc is not None:
                    self._acl_row(acc, identity, kind, effect)
        self._note_broken(accs.values())
        return accs

    def _note_broken(self, accs: Iterable[_Acc]) -> None:
        broken = sum(1 for a in accs if a.broken)
        if broken:
            self.problems.append(f"{broken} document(s) private: an ACL row with an unknown kind or effect")
            log.warning("connector.sql.acl_rows_invalid", source=self.name, documents=broken)

    def _render(self, row: Mapping[str, Any]) -> tuple[str, bytes]:
        title = "" if self.title_column is None or row.get(self.title_column) is None else str(row[self.title_column])
        parts = [str(row[c]) for c in self.text_columns if row.get(c) is not None]
        body = "\n\n".join(parts)
        head = (f"# {title}" if self.format == "md" else title) if title else ""
        rendered = f"{head}\n\n{body}\n" if head else f"{body}\n"
        return title, rendered.encode("utf-8")

    def _document(self, row: Mapping[str, Any], acl: SourceAcl) -> ConnectorDocument | None:
        """The row's document, or ``None`` (recorded in ``skipped``) when it is over the size limit."""
        doc_id = str(row[self.id_column])
        columns = (self.title_column, *self.text_columns) if self.title_column else self.text_columns
        chars = sum(len(str(row[c])) for c in columns if row.get(c) is not None)  # a UTF-8 byte per char at least
        size = chars if chars > self.max_document_bytes else None
        if size is None:
            title, content = self._render(row)
            size = len(content) if len(content) > self.max_document_bytes else None
        if size is not None:
            self.skipped.append((doc_id, f"too_large: at least {size} bytes > max_document_bytes {self.max_document_bytes}"))
            log.warning("connector.sql.row_too_large", source=self.name, size=size, limit=self.max_document_bytes)
            return None
        safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", doc_id)[:120] or "row"
        uri = self.uri_template.format(id=doc_id) if self.uri_template else f"{self._safe_url}#{self.id_column}={doc_id}"
        metadata = {c: str(row[c]) for c in self.metadata_columns if row.get(c) is not None}
        return ConnectorDocument(doc_id=doc_id, filename=f"{safe_name}.{self.format}", content=content, acl=acl,
                                 modified_at=_aware(row[self.updated_at_column]), uri=uri, title=title, metadata=metadata)

    # -- streams ------------------------------------------------------------------------------
    def documents(self, since: str | None) -> Iterator[Batch[ConnectorDocument]]:
        """Rows after the ``(updated_at, id)`` keyset of the checkpoint, a page per batch."""
        position = self._load_docs(since)
        self.skipped = []
        src_id, src_upd = f"{_SRC}.{self._q(self.id_column)}", f"{_SRC}.{self._q(self.updated_at_column)}"
        base = f"SELECT * FROM ({self.query}) AS {_SRC} WHERE {src_upd} IS NOT NULL"
        order = f"ORDER BY {src_upd}, {src_id} LIMIT {int(self.batch_docs)}"
        while True:
            if position is None:
                sql, params = f"{base} {order}", {}
            else:
                sql = f"{base} AND ({src_upd} > :t OR ({src_upd} = :t AND {src_id} > :i)) {order}"
                params = {"t": position[0], "i": position[1]}
            rows = [dict(r._mapping) for r in self._run(sql, params)]
            if rows:
                self._check_columns(rows[0])
            accs = self._acls_for(rows)
            self._end()
            if not rows:
                return
            items = [d for d in (self._document(r, accs[str(r[self.id_column])].acl()) for r in rows) if d is not None]
            last = rows[-1]
            position = (last[self.updated_at_column], last[self.id_column])
            cp = {"t": _encode_value(position[0]), "i": _encode_value(position[1])}
            yield Batch(items, _CP_DOCS + json.dumps(cp, separators=(",", ":")))
            if len(rows) < self.batch_docs:
                return

    def _check_columns(self, row: Mapping[str, Any]) -> None:
        """The configured columns are in the query's result (a ConfigError naming them, not a
        KeyError half-way through a run)."""
        wanted = [self.id_column, self.updated_at_column, *self.text_columns, *self.metadata_columns,
                  *(c for c in (self.title_column, self.allow_column, self.deny_column) if c)]
        missing = [c for c in wanted if c not in row]
        if missing:
            raise ConfigError(f"source {self.name}: the query returns no column {', '.join(missing)}", code="invalid_source")

    def _end(self) -> None:
        """End the read transaction: nothing stays open (no snapshot held) while the engine
        works on a batch between two pages."""
        if self._conn is not None:
            self._conn.rollback()

    def _load_docs(self, since: str | None) -> tuple[object, object] | None:
        if not since:
            return None
        if not since.startswith(_CP_DOCS):
            raise ConfigError("the stored content checkpoint is not this connector's", code="bad_checkpoint")
        try:
            data = json.loads(since[len(_CP_DOCS):])
        except ValueError as exc:
            raise ConfigError("the stored content checkpoint is corrupt", code="bad_checkpoint") from exc
        if not isinstance(data, dict) or "t" not in data or "i" not in data:
            raise ConfigError("the stored content checkpoint is corrupt", code="bad_checkpoint")
        return _decode_value(data["t"]), _decode_value(data["i"])

    def _all_acls(self) -> dict[str, _Acc]:
        """Every present document's ACL: the id (and ACL columns) of every row, then every ACL row,
        both streamed."""
        src_upd = f"{_SRC}.{self._q(self.updated_at_column)}"
        cols = [self.id_column] + [c for c in (self.allow_column, self.deny_column) if c]
        select = ", ".join(f"{_SRC}.{self._q(c)}" for c in cols)
        accs: dict[str, _Acc] = {}
        for row in self._run(f"SELECT {select} FROM ({self.query}) AS {_SRC} WHERE {src_upd} IS NOT NULL", stream=True):
            mapping = dict(zip(cols, row))
            acc = accs.setdefault(str(mapping[self.id_column]), _Acc())
            self._column_acl(mapping, acc)
        if self.acl_query:
            for doc_id, identity, kind, effect in self._run(self._acl_sql(), stream=True):
                acc_or_none = accs.get(str(doc_id))
                if acc_or_none is not None:
                    self._acl_row(acc_or_none, identity, kind, effect)
        self._note_broken(accs.values())
        self._end()
        return accs

    def permissions(self, since: str | None) -> Iterator[Batch[PermissionChange]]:
        """Documents whose whole ACL differs from the fingerprint the checkpoint holds."""
        before = self._load_perms(since)
        accs = self._all_acls()
        state = dict(before)
        items: list[PermissionChange] = []
        for doc_id in sorted(accs):
            acl = accs[doc_id].acl()
            fp = _fingerprint(acl)
            if before.get(doc_id) == fp:
                continue
            state[doc_id] = fp
            items.append(PermissionChange(doc_id, acl))
            if len(items) >= self.batch_docs:
                yield Batch(items, self._pack_perms(state))
                items = []
        for gone in set(state) - set(accs):
            del state[gone]
        if items or state != before or since is None:
            yield Batch(items, self._pack_perms(state))

    @staticmethod
    def _pack_perms(state: Mapping[str, str]) -> str:
        raw = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
        return _CP_PERMS + base64.b64encode(zlib.compress(raw, 6)).decode()

    @staticmethod
    def _load_perms(since: str | None) -> dict[str, str]:
        if not since:
            return {}
        if not since.startswith(_CP_PERMS):
            raise ConfigError("the stored permissions checkpoint is not this connector's", code="bad_checkpoint")
        try:
            data = json.loads(zlib.decompress(base64.b64decode(since[len(_CP_PERMS):])))
        except (ValueError, zlib.error) as exc:
            raise ConfigError("the stored permissions checkpoint is corrupt", code="bad_checkpoint") from exc
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ConfigError("the stored permissions checkpoint is corrupt", code="bad_checkpoint")
        return {str(k): v for k, v in data.items()}

    def listing(self) -> list[str]:
        src_id, src_upd = f"{_SRC}.{self._q(self.id_column)}", f"{_SRC}.{self._q(self.updated_at_column)}"
        sql = f"SELECT {src_id} FROM ({self.query}) AS {_SRC} WHERE {src_upd} IS NOT NULL"
        ids = [str(row[0]) for row in self._run(sql, stream=True)]
        self._end()
        return ids

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
