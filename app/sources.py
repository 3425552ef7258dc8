"""Sources as objects: what exists, who may write it, and which server folders it may read.

A source is created on purpose (``clearance:admin`` over the API, or the operator's local CLI),
never by a write: ``app.writes`` refuses writes to a source that is not here (404
``unknown_source``). Each source has a kind (``push``: systems of record PUT, PATCH and DELETE
documents; ``filesystem``: a folder synced with its ``acl.toml``; ``connector``: a system of
record read by a connector, ``app.connectors``, with the connector's name, JSON config and sync
intervals), for filesystem sources a root, and its writer principals: a caller may write the source only if it holds one of them (and the
``clearance:ingest`` scope). Creating, changing and deleting a source are audited write events,
as are the refusals.

Server-side folders (``server_folder``): a folder job, a resync, or a filesystem source created
over the API may only read a folder under ``ingest.allowed_roots``. The path is resolved first
(``..``, symlinks), so no spelling leaves a root; ``/proc``, ``/sys`` and ``/dev`` are refused
whatever the roots. Empty roots (the default) refuse every server-side folder, except in dev auth
mode (loopback only), where a filesystem source may also be synced from the root the operator
registered locally (``clearance ingest PATH`` with no server running): the trust behind that
root is the operator's access to the data dir, not a token.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from auth.authenticator import ADMIN, Authenticator
from core.audit import principals_hash
from core.errors import ClearanceError, InvalidRequestError, NotFoundError, PermissionDeniedError
from core.logging import Log, current_request_id
from core.settings import Settings
from core.types import Entitlements, principal_problem
from store.audit import WriteActor, WriteAudit
from store.catalog import Catalog, SourceRegistryRow, WriteEventRow, unavailable, utcnow

log = Log("clearance.sources")

SourceKind = Literal["push", "filesystem", "connector"]
SOURCE_KINDS: tuple[str, ...] = ("push", "filesystem", "connector")
SYSTEM_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"))
MAX_SOURCE_NAME = 128


@dataclass(frozen=True)
class ConnectorSpec:
    """What a ``connector`` source is read with: an installed connector (entry-point name), its
    config (a JSON object; a ``root`` in it is a server folder, confined like a filesystem
    source's) and its content and permission sync intervals in seconds."""

    connector: str
    config: dict[str, Any]
    content_interval_s: int = 3600
    permission_interval_s: int = 300


def actor_of(caller: Entitlements) -> WriteActor:
    return WriteActor(issuer=caller.issuer, subject=caller.subject, principals_hash=principals_hash(caller.principals),
                      tenant=caller.tenant)


def check_source_name(name: str) -> str:
    """Source names travel in URL paths and document keys: printable, no ``/``, no whitespace
    at an end, at most 128 characters."""
    if (not isinstance(name, str) or not name or len(name) > MAX_SOURCE_NAME or not name.isprintable()
            or name != name.strip() or "/" in name or name in (".", "..")):
        raise InvalidRequestError(f"invalid source name {name!r}: 1-{MAX_SOURCE_NAME} printable characters, "
                                  "no '/', no whitespace at either end", code="invalid_source")
    return name


def check_writers(writers: list[str]) -> list[str]:
    problems = [p for p in (principal_problem(w) for w in writers) if p is not None]
    if problems:
        raise InvalidRequestError("invalid writer principals: " + "; ".join(problems), code="invalid_principal")
    return sorted(set(writers))


@dataclass(frozen=True)
class SourceView:
    name: str
    tenant: str
    kind: str
    root: str | None
    writers: list[str]
    created_at: str
    created_by: str

    @classmethod
    def of(cls, row: SourceRegistryRow) -> SourceView:
        return cls(row.name, row.tenant, row.kind, row.root, sorted(row.writer_set),
                   row.created_at.isoformat() if row.created_at else "", row.created_by)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tenant": self.tenant, "kind": self.kind, "root": self.root,
                "writers": self.writers, "created_at": self.created_at, "created_by": self.created_by}


class SourceRegistry:
    def __init__(self, settings: Settings, catalog: Catalog, audit: WriteAudit) -> None:
        self._settings = settings
        self._catalog = catalog
        self._audit = audit
        # Connectors added in-process by name (tests, embedding applications); looked up before the
        # installed entry points. Shared with ``app.connectors.ConnectorSync``.
        self.connector_factories: dict[str, Any] = {}

    @property
    def tenant(self) -> str:
        return self._settings.ingest.tenant

    # -- reads ------------------------------------------------------------------------------------
    def get(self, name: str) -> SourceRegistryRow | None:
        with unavailable("catalog"):
            return self._catalog.source(name)

    def all(self) -> list[SourceRegistryRow]:
        with unavailable("catalog"):
            return self._catalog.registered_sources()

    # -- audit ------------------------------------------------------------------------------------
    def event(self, caller: Entitlements, action: str, outcome: str, *, source: str = "", doc_id: str | None = None,
              status: int = 200, code: str | None = None, job_id: int | None = None,
              detail: dict[str, Any] | None = None) -> int:
        return self._audit.record(actor=actor_of(caller), action=action, outcome=outcome, tenant=self.tenant,
                                  source=source, doc_id=doc_id, status=status, code=code,
                                  request_id=current_request_id() or "", job_id=job_id, detail=detail)

    def refuse(self, caller: Entitlements, action: str, source: str, exc: ClearanceError,
               doc_id: str | None = None) -> ClearanceError:
        """Record a refused write, then hand back the error to raise. The refusal stands even when
        the event cannot be stored (logged; the caller still gets the refusal, not a 503)."""
        try:
            self.event(caller, action, "refused", source=source, doc_id=doc_id, status=exc.status, code=exc.code,
                       detail={"message": exc.message[:500], "caller_tenant": caller.tenant})
        except ClearanceError:
            log.error("audit.write_refusal_unrecorded", action=action, code=exc.code)
        log.info("write.refused", action=action, code=exc.code, source=source)
        return exc

    def event_row(self, caller: Entitlements, action: str, outcome: str, source: str,
                   detail: dict[str, Any]) -> WriteEventRow:
        a = actor_of(caller)
        return WriteEventRow(at=utcnow(), request_id=current_request_id() or "", tenant=self.tenant, issuer=a.issuer,
                             subject=a.subject, principals_hash=a.principals_hash, action=action, outcome=outcome,
                             status=200, source=source, detail=json.dumps(detail, sort_keys=True, default=str))

    # -- admin ------------------------------------------------------------------------------------
    def require_admin(self, caller: Entitlements, action: str, source: str) -> None:
        try:
            Authenticator.require(caller, ADMIN)
            if caller.tenant != self.tenant:
                raise PermissionDeniedError("this deployment writes and administers another tenant's documents",
                                            code="wrong_tenant")
        except PermissionDeniedError as exc:
            raise self.refuse(caller, action, source, exc) from None

    def create(self, caller: Entitlements, name: str, kind: str, writers: list[str], root: str | None, *,
               local: bool = False, connector: ConnectorSpec | None = None) -> SourceView:
        """Register a source (admin). ``local``: the operator's CLI registering its own folder,
        which is not confined to ``ingest.allowed_roots`` (it is not read by the server).
        ``connector``: required for (and only for) a ``connector`` source."""
        self.require_admin(caller, "source_create", name)
        check_source_name(name)
        if kind not in SOURCE_KINDS:
            raise InvalidRequestError(f"kind must be one of {', '.join(SOURCE_KINDS)}", code="invalid_source")
        writers = check_writers(writers)
        if (kind == "connector") != (connector is not None):
            raise InvalidRequestError("a connector source needs its connector (and only it has one)", code="invalid_source")
        extra: list[Any] = []
        connector_detail: dict[str, Any] = {}
        if kind == "connector":
            if root is not None:
                raise InvalidRequestError("a connector source has no root (its config says what it reads)",
                                          code="invalid_source")
            assert connector is not None
            extra, connector_detail = self._connector_rows(caller, name, connector, local=local)
            # A server-read connector root is kept resolved in the registry row: before each run
            # the engine checks the root still resolves there and is still allowed
            # (``ConnectorSync.check_root``). The local CLI's own folders are not confined.
            resolved = connector_detail.get("root") if not local else None
        elif kind == "push":
            if root is not None:
                raise InvalidRequestError("a push source has no root", code="invalid_source")
            resolved = None
        else:
            if not root:
                raise InvalidRequestError("a filesystem source needs its root folder", code="invalid_source")
            if local:
                resolved = str(Path(root).resolve())
            else:
                try:
                    resolved = str(self.server_folder(root, None))
                except PermissionDeniedError as exc:
                    raise self.refuse(caller, "source_create", name, exc) from None
        row = SourceRegistryRow(name=name, tenant=self.tenant, kind=kind, root=resolved,
                                writers=json.dumps(writers), created_by=f"{caller.issuer} {caller.subject}")
        detail = {"kind": kind, "root": resolved, "writers": writers, **connector_detail}
        with unavailable("catalog"):
            self._catalog.create_source(row, journal=[*extra, self.event_row(caller, "source_create", "created", name,
                                                                               detail)])
        log.info("source.created", source=name, kind=kind, writers=len(writers))
        return SourceView.of(row)

    def _connector_rows(self, caller: Entitlements, name: str, spec: ConnectorSpec, *,
                        local: bool) -> tuple[list[Any], dict[str, Any]]:
        """The connector row of a new connector source and its audit detail: the connector is
        installed, its config is a JSON object it accepts (a ``root`` in it confined to
        ``ingest.allowed_roots`` unless ``local``), the intervals are positive."""
        from app.connectors import check_config, mask_config
        from core.errors import ConfigError
        from ingest.connectors.contract import load
        from store.connectors import ConnectorSourceRow

        config = check_config(spec.config)
        if not local and spec.connector == "sql" and _is_sqlite(config.get("url")):
            # A SQLite file is read by the server process with its file permissions: over the API
            # it would open any database file the server can read. Only the operator's local CLI.
            raise self.refuse(caller, "source_create", name, PermissionDeniedError(
                "a sql connector source over SQLite can only be added with the local CLI "
                "(`clearance sources add NAME --connector sql ...` on the server host), not over the API", code="sqlite_not_allowed"))
        for label, value in (("content_interval_s", spec.content_interval_s),
                             ("permission_interval_s", spec.permission_interval_s)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidRequestError(f"{label} must be a positive number of seconds", code="invalid_source")
        if isinstance(config.get("root"), str):
            if local:
                config["root"] = str(Path(config["root"]).resolve())
            else:
                try:
                    config["root"] = str(self.server_folder(config["root"], None))
                except PermissionDeniedError as exc:
                    raise self.refuse(caller, "source_create", name, exc) from None
        try:
            from app.connectors import capped_config

            factory = self.connector_factories.get(spec.connector) or load(spec.connector)
            # Checked as the engine will make it: size bounds capped at ``ingest.max_file_bytes``.
            factory(name, capped_config(spec.connector, config, self._settings.ingest.max_file_bytes)).close()
        except ConfigError as exc:
            raise InvalidRequestError(f"connector {spec.connector!r}: {exc.message}", code=exc.code) from None
        except Exception as exc:  # its message may hold the config (a DSN with a password): the type only
            raise InvalidRequestError(f"connector {spec.connector!r} refused its config ({type(exc).__name__})",
                                      code="invalid_source") from None
        row = ConnectorSourceRow(name=name, connector=spec.connector, config=json.dumps(config, sort_keys=True),
                                 content_interval_s=spec.content_interval_s,
                                 permission_interval_s=spec.permission_interval_s)
        root_detail = {"root": config["root"]} if isinstance(config.get("root"), str) else {}
        return [row], {**root_detail, "connector": spec.connector, "config": mask_config(config),
                       "content_interval_s": spec.content_interval_s, "permission_interval_s": spec.permission_interval_s}

    def update(self, caller: Entitlements, name: str, *, writers: list[str] | None = None,
               root: str | None = None, local: bool = False) -> SourceView:
        """Replace a source's writers and/or its root (admin)."""
        self.require_admin(caller, "source_update", name)
        row = self.get(name)
        if row is None:
            raise NotFoundError(f"unknown source {name!r}", code="unknown_source")
        before = SourceView.of(row).as_dict()
        if writers is not None:
            row.writers = json.dumps(check_writers(writers))
        if root is not None:
            if row.kind != "filesystem":
                raise InvalidRequestError("a push source has no root", code="invalid_source")
            try:
                row.root = str(Path(root).resolve()) if local else str(self.server_folder(root, None))
            except PermissionDeniedError as exc:
                raise self.refuse(caller, "source_update", name, exc) from None
        after = SourceView.of(row).as_dict()
        with unavailable("catalog"):
            self._catalog.save_source(row, journal=[self.event_row(caller, "source_update", "updated", name,
                                                                     {"before": before, "after": after})])
        return SourceView.of(row)

    # -- server-side folders ------------------------------------------------------------------------
    def server_folder(self, raw: str, source_root: str | None) -> Path:
        """The resolved folder the server may read for ``raw``, or ``PermissionDeniedError``
        ``path_not_allowed`` (403); 422 ``not_a_directory`` when an allowed path is no folder.
        ``source_root``: the registered root of the source the folder is read for (allowed in
        dev mode only)."""
        p = Path(raw)
        if not p.is_absolute():
            raise InvalidRequestError(f"the folder must be an absolute path on the server, got {raw!r}",
                                      code="path_not_absolute")
        resolved = Path(os.path.realpath(p))
        if any(resolved == s or resolved.is_relative_to(s) for s in SYSTEM_FOLDERS):
            raise PermissionDeniedError(f"{raw} resolves to {resolved}, a system folder the server never reads",
                                        code="path_not_allowed")
        roots = [Path(os.path.realpath(r)) for r in self._settings.ingest.allowed_roots]
        if self._settings.auth.mode == "dev" and source_root:
            roots.append(Path(os.path.realpath(source_root)))
        if not any(resolved == r or resolved.is_relative_to(r) for r in roots):
            where = ", ".join(str(r) for r in self._settings.ingest.allowed_roots) or "none configured"
            raise PermissionDeniedError(
                f"{raw} resolves to {resolved}, outside the folders this server may read (ingest.allowed_roots: "
                f"{where}); to allow it, start the server with "
                f"CLEARANCE_INGEST__ALLOWED_ROOTS='{json.dumps([str(resolved)])}'", code="path_not_allowed")
        if not resolved.is_dir():
            raise InvalidRequestError(f"not a directory on the server: {raw}", code="not_a_directory")
        return resolved


def _is_sqlite(url: object) -> bool:
    return isinstance(url, str) and url.strip().lower().startswith("sqlite")


def source_listing(statuses: list[Any], registered: list[SourceRegistryRow]) -> list[dict[str, Any]]:
    """Freshness statuses (``store.freshness``) merged with the registry: kind, root and writers
    of registered sources, ``registered: false`` for names only seen in jobs, documents or SLAs."""
    reg = {r.name: SourceView.of(r).as_dict() for r in registered}
    out = []
    for st in statuses:
        d = st.as_dict()
        view = reg.get(st.name)
        d["registered"] = view is not None
        d["writers"] = view["writers"] if view else []
        if view is not None:
            d["kind"], d["root"] = view["kind"], view["root"]
        out.append(d)
    return out
