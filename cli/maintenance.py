"""Store maintenance: ``clearance db upgrade | db status``, ``reindex``, ``backup``, ``restore``.

``db upgrade`` is what the compose ``migrate`` service runs once per release; ``serve``/``worker``
upgrade by themselves only with ``db.auto_migrate`` (the default for the embedded SQLite
catalog). ``backup`` works whether or not a server runs: it opens the store itself when it can,
and asks the server that owns the shard otherwise (``POST /v1/admin/backups``). A domain error
is one line per problem and exit code 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, NoReturn

import typer

from core.errors import ClearanceError
from core.settings import Settings

db_app = typer.Typer(no_args_is_help=True, help="The catalog's schema (migrations).")


def _settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Settings) else Settings()


def _fail(exc: ClearanceError) -> NoReturn:
    for line in [ln.strip() for ln in exc.message.splitlines() if ln.strip()] or [""]:
        typer.echo(f"error [{exc.code}]: {line}", err=True)
    raise typer.Exit(2)


def _engine(s: Settings) -> Any:
    from sqlalchemy import create_engine

    url = s.catalog_url()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return create_engine(url, pool_pre_ping=True)


def _where(engine: Any) -> str:
    return str(engine.url.render_as_string(hide_password=True))


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, revision: str = typer.Option("head", help="target revision")) -> None:
    """Upgrade the catalog schema (a 0.1.0 catalog keeps its rows) and the index's schema version
    in place (its points are kept); safe to run again."""
    from sqlalchemy.exc import SQLAlchemyError

    from store.migrate import upgrade

    engine = _engine(_settings(ctx))
    try:
        before, after = upgrade(engine, revision)
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        _fail(ClearanceError(f"cannot upgrade the catalog at {_where(engine)}: {type(exc).__name__}: {reason}",
                             code="catalog_unavailable"))
    finally:
        engine.dispose()
    if before == after:
        typer.echo(f"catalog at {_where(engine)}: already at revision {after}")
    else:
        typer.echo(f"catalog at {_where(engine)}: upgraded from {before or 'nothing (new or 0.1.0)'} to {after}")
    typer.echo(_upgrade_index(_settings(ctx)))


def _upgrade_index(s: Settings) -> str:
    """The index's part of ``db upgrade``: an older schema version upgraded in place."""
    from app.index_schema import INDEX_SCHEMA_VERSION, LEGACY_VERSION, check_index_schema, read_version
    from app.services import build_index
    from core.errors import BackendUnavailableError

    try:
        index = build_index(s, s.embedder.dim)
    except BackendUnavailableError as exc:
        if exc.code == "index_locked":  # a running server owns it, and checked it when it opened it
            return "index: owned by a running process, not upgraded here (stop it and run this again)"
        _fail(exc)
    try:
        before = read_version(s, index)
        if before is None and index.size() > 0:
            before = LEGACY_VERSION  # written by 0.1.0, before versions were stored: adopted, then upgraded
        check_index_schema(s, index, upgrade=True)
    except ClearanceError as exc:
        _fail(exc)
    finally:
        index.close()
    if before in (None, INDEX_SCHEMA_VERSION):
        return f"index: at schema version {INDEX_SCHEMA_VERSION}"
    return f"index: upgraded in place from schema version {before} to {INDEX_SCHEMA_VERSION}"


@db_app.command("status")
def db_status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """The catalog's schema revision and the index's schema version beside this release's; exit 1
    when an upgrade of either is due."""
    from store.migrate import state

    s = _settings(ctx)
    engine = _engine(s)
    try:
        st = state(engine)
    finally:
        engine.dispose()
    data: dict[str, Any] = {"catalog": _where(engine), "current": st.current, "head": st.head, "legacy_0_1_0": st.legacy,
                            "empty": st.empty, "up_to_date": st.up_to_date}
    try:
        index = index_status(s)
    except ClearanceError as exc:
        _fail(exc)
    data["index"] = index
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(f"catalog at {data['catalog']}: revision {st.current or ('0.1.0 (before migrations)' if st.legacy else 'none')}"
                   f", this release needs {st.head}" + ("" if st.up_to_date else ": run `clearance db upgrade`"))
        held = "none (created on first use)" if index["empty"] else (
            index["schema"] if index["schema"] is not None else "not recorded (written by 0.1.0)")
        typer.echo(f"index {index['where']}: schema version {held}, this release needs {index['head']}"
                   + ("" if index["up_to_date"] else ": run `clearance db upgrade`"))
    if not (st.up_to_date and index["up_to_date"]):
        raise typer.Exit(1)


def index_status(s: Settings) -> dict[str, Any]:
    """The index's recorded schema version, read without taking the index over (a running server
    may own the Edge shard) and without creating it."""
    from app.index_schema import INDEX_SCHEMA_VERSION, read_marker, uses_server

    if uses_server(s):
        from retrieval.server_index import stored_schema

        exists, points, version = stored_schema(s.qdrant)
        where, empty = f"collection {s.qdrant.collection!r}", not exists or (points == 0 and version is None)
    else:
        edge = s.storage.edge_path
        version = read_marker(edge)
        where = f"at {edge}"
        # Without a marker, a shard holding files was written by 0.1.0 (or never got a point):
        # `db upgrade` records or upgrades either.
        empty = version is None and not (edge.is_dir() and any(edge.iterdir()))
    return {"where": where, "schema": version, "head": INDEX_SCHEMA_VERSION, "empty": empty,
            "up_to_date": empty or version == INDEX_SCHEMA_VERSION}


def reindex(ctx: typer.Context,
            yes: bool = typer.Option(False, "--yes", help="confirm: the index is rebuilt from the recorded sources"),
            as_json: bool = typer.Option(False, "--json")) -> None:
    """Rebuild the index from the catalog's recorded filesystem sources (after an index schema change).

    The old Edge shard is kept beside the new one; a Qdrant collection is dropped. Pushed
    documents cannot be rebuilt and are listed: push them again. Stop the server first."""
    from app.maintenance import reindex as run_reindex

    if not yes:
        _fail(ClearanceError("reindex replaces the index: pass --yes to go ahead", code="confirmation_required"))
    try:
        report = run_reindex(_settings(ctx))
    except ClearanceError as exc:
        _fail(exc)
    data = report.as_dict()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        if data["previous_index"]:
            typer.echo(f"previous index kept at {data['previous_index']} (delete it once satisfied)")
        for name, counts in data["synced"].items():
            typer.echo(f"synced {name}: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing"))
        for name, why in data["errors"].items():
            typer.echo(f"could not sync {name}: {why}", err=True)
        for name, n in data["documents_to_push_again"].items():
            typer.echo(f"source {name}: {n} pushed documents have no chunks until they are pushed again")
        typer.echo(f"index rebuilt: {data['points']} points")
    if data["errors"]:
        raise typer.Exit(1)


def backup(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="new or empty folder for the backup"),
    server: str | None = typer.Option(None, help="the server that owns the index (default: server.host/port)"),
    token: str | None = typer.Option(None, envvar="CLEARANCE_TOKEN", help="token with clearance:admin (oidc mode)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Back up the embedded store (Edge shard + SQLite catalog), consistently, while serving."""
    from app.maintenance import backup as take_backup
    from app.maintenance import open_store

    s = _settings(ctx)
    out = out.resolve()
    try:
        store = open_store(s)
    except ClearanceError as exc:
        if exc.code != "index_locked":
            _fail(exc)
        path, manifest = _backup_through_server(s, server, token)
        if path != out:
            if out.exists() and (not out.is_dir() or any(out.iterdir())):
                _fail(ClearanceError(f"{out} exists and is not an empty folder; the backup is at {path}",
                                     code="backup_target_exists"))
            if out.exists():
                out.rmdir()
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), out)
    else:
        try:
            manifest = take_backup(store, out).manifest
        except ClearanceError as exc:
            _fail(exc)
        finally:
            store.close()
    summary = {"path": str(out), "created_at": manifest["created_at"], "documents": manifest["catalog"]["documents"],
               "points": manifest["index"]["points"], "catalog_revision": manifest["catalog"]["revision"]}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(f"backup at {out}: {summary['documents']} documents, {summary['points']} points "
                   f"(catalog revision {summary['catalog_revision']})")


def _backup_through_server(s: Settings, server: str | None, token: str | None) -> tuple[Path, dict[str, Any]]:
    """The shard is open in a running server: it takes the backup, into storage.backup_dir."""
    import httpx

    server = server or f"http://{s.server.host}:{s.server.port}"
    if token is None:
        if s.auth.mode != "dev":
            _fail(ClearanceError("the index is owned by a running server; pass --token with clearance:admin", code="index_locked"))
        from auth.dev_issuer import DevIssuer

        token = DevIssuer(s.auth, s.storage.dev_key_path).mint("clearance-cli", scopes=["clearance:admin"],
                                                               tenant=s.ingest.tenant)
    typer.echo(f"the index is owned by the server at {server}; it takes the backup", err=True)
    try:
        resp = httpx.post(f"{server}/v1/admin/backups", json={}, headers={"authorization": f"Bearer {token}"}, timeout=3600)
    except httpx.HTTPError as exc:
        _fail(ClearanceError(f"the index is locked and the server is unreachable: {exc}", code="index_locked"))
    if resp.status_code != 200:
        err = resp.json().get("error", {}) if resp.headers.get("content-type", "").startswith("application/json") else {}
        _fail(ClearanceError(err.get("message", resp.text[:200]), code=err.get("code", f"http_{resp.status_code}")))
    body = resp.json()
    from store.backup import read_manifest

    path = Path(body["path"])
    return path, read_manifest(path)


def restore(
    ctx: typer.Context,
    source: Path = typer.Argument(..., exists=True, file_okay=False, help="a folder made by `clearance backup`"),
    force: bool = typer.Option(False, "--force", help="move the current data aside (into the data dir) first"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Restore a backup into storage.data_dir (stop the server first); checks every file and count."""
    from app.maintenance import restore as run_restore

    try:
        result = run_restore(_settings(ctx), source.resolve(), force=force)
    except ClearanceError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    if result["moved_aside"]:
        typer.echo(f"previous data moved to {result['moved_aside']}")
    typer.echo(f"restored {result['documents']} documents and {result['points']} points from {result['from']} "
               f"(taken {result['created_at']}; catalog revision {result['catalog_revision']})")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.command()(reindex)
    app.command()(backup)
    app.command()(restore)
