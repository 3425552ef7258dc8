"""``clearance sources [add | show | update | delete]``: sources as objects, from the machine.

``clearance sources`` lists them (registry and freshness). ``add``, ``show`` and ``update`` need
only the catalog, so they work while a server runs; ``delete`` removes every document and chunk
of the source, so it opens the index, or, when a running server owns it, asks that server
(``DELETE /v1/admin/sources/NAME``; in dev mode with a token the CLI mints, else --token with
``clearance:admin``). Local commands act as the operator (``auth.local``) and are audited.
"""

from __future__ import annotations

from typing import Any

import typer

from cli.ops import _catalog, _emit, _print_sources, _settings
from core.errors import ClearanceError

sources_app = typer.Typer(help="Sources: list, add, show, update writers, delete.", invoke_without_command=True)


def _print_source(d: dict[str, Any]) -> None:
    typer.echo(f"{d['name']}: {d['kind']} source of tenant {d['tenant']}")
    if d.get("root"):
        typer.echo(f"  root: {d['root']}")
    typer.echo(f"  writers: {', '.join(d['writers']) or 'none (nobody may write it over the API)'}")
    typer.echo(f"  created {d['created_at']} by {d['created_by']}")
    if d.get("connector"):
        from cli.connectors import print_connector

        print_connector(d["connector"])
    if "documents" in d:
        docs = ", ".join(f"{n} {state}" for state, n in sorted(d["documents"].items())) or "no documents"
        typer.echo(f"  documents: {docs}")


def _fail(exc: ClearanceError) -> None:
    for line in exc.message.splitlines() or [""]:
        typer.echo(f"error [{exc.code}]: {line}", err=True)
    raise typer.Exit(2)


@sources_app.callback()
def sources(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Sources with their kind, writers, last successful sync, lag and freshness SLA."""
    if ctx.invoked_subcommand is not None:
        return
    from app.sources import SourceRegistry, source_listing
    from store.audit import WriteAudit
    from store.freshness import Freshness

    s = _settings(ctx)
    with _catalog(ctx) as cat:
        data = source_listing(Freshness(cat, s.ingest.source_sla_s).statuses(),
                              SourceRegistry(s, cat, WriteAudit(cat)).all())
    _emit({"sources": data}, as_json, lambda d: _print_sources(d["sources"]))


@sources_app.command("add")
def add(ctx: typer.Context, name: str = typer.Argument(...),
        kind: str | None = typer.Option(None, help="push (systems of record push documents), filesystem (a folder) "
                                        "or connector (implied by --connector)"),
        root: str | None = typer.Option(None, help="filesystem: the folder"),
        writer: list[str] = typer.Option([], help="principal whose callers may write it; repeat"),
        connector: str | None = typer.Option(None, help="connector sources: the installed connector (filesystem, "
                                             "posix, sql, imap, ...)"),
        config: str = typer.Option("{}", help="connector sources: the connector's config, a JSON object"),
        content_interval: int = typer.Option(3600, help="connector sources: seconds between content syncs"),
        permission_interval: int = typer.Option(300, help="connector sources: seconds between permission syncs"),
        as_json: bool = typer.Option(False, "--json")) -> None:
    """Register a source (as the local operator, audited)."""
    from app.connectors import check_config
    from app.sources import ConnectorSpec, SourceRegistry
    from auth.local import operator_entitlements
    from store.audit import WriteAudit

    s = _settings(ctx)
    kind = kind or ("connector" if connector else None)
    if kind is None:
        _fail(ClearanceError("--kind or --connector is required", code="invalid_source"))
    assert kind is not None
    with _catalog(ctx) as cat:
        try:
            spec = (ConnectorSpec(connector or "", check_config(config), content_interval, permission_interval)
                    if kind == "connector" else None)
            view = SourceRegistry(s, cat, WriteAudit(cat)).create(operator_entitlements(s.ingest.tenant), name, kind,
                                                                  writer, root, local=True, connector=spec)
        except ClearanceError as exc:
            _fail(exc)
    _emit(view.as_dict(), as_json, _print_source)


@sources_app.command("show")
def show(ctx: typer.Context, name: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """One source: kind, root, writers, who created it, its documents."""
    from app.sources import SourceRegistry, SourceView

    s = _settings(ctx)
    from store.audit import WriteAudit

    with _catalog(ctx) as cat:
        row = SourceRegistry(s, cat, WriteAudit(cat)).get(name)
        if row is None:
            _fail(ClearanceError(f"unknown source {name!r}", code="unknown_source"))
        assert row is not None
        data = {**SourceView.of(row).as_dict(), "documents": cat.document_counts().get(name, {})}
        if row.kind == "connector":
            from cli.connectors import connector_status

            data["connector"] = connector_status(s, cat, name)
    _emit(data, as_json, _print_source)


@sources_app.command("update")
def update(ctx: typer.Context, name: str = typer.Argument(...),
           writer: list[str] = typer.Option(..., help="the new writer principals (replace the old ones); repeat"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Replace the writers of a source (as the local operator, audited)."""
    from app.sources import SourceRegistry
    from auth.local import operator_entitlements
    from store.audit import WriteAudit

    s = _settings(ctx)
    with _catalog(ctx) as cat:
        try:
            view = SourceRegistry(s, cat, WriteAudit(cat)).update(operator_entitlements(s.ingest.tenant), name,
                                                                  writers=writer)
        except ClearanceError as exc:
            _fail(exc)
    _emit(view.as_dict(), as_json, _print_source)


@sources_app.command("delete")
def delete(ctx: typer.Context, name: str = typer.Argument(...),
           yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
           server: str | None = typer.Option(None, help="running server (default: the one recorded in the data dir)"),
           token: str | None = typer.Option(None, envvar="CLEARANCE_TOKEN", help="token with clearance:admin (oidc)"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Delete a source on purpose: every document and chunk it holds, then the source."""
    from app.services import build_services
    from auth.local import operator_entitlements

    s = _settings(ctx)
    if not yes:
        typer.confirm(f"delete source {name!r} with all its documents?", abort=True)
    try:
        services = build_services(s)
    except ClearanceError as exc:
        if exc.code != "index_locked":
            _fail(exc)
        from cli.main import _call, _cli_token, _server_url

        url = _server_url(s, server)
        resp = _call(url, "DELETE", f"/v1/admin/sources/{name}", _cli_token(s, token, "clearance:admin"))
        if resp.pop("_status") != 200:
            err = resp.get("error", {})
            _fail(ClearanceError(err.get("message", ""), code=err.get("code", "http_error")))
        result = resp
    else:
        try:
            result = services.writes.delete_source(operator_entitlements(s.ingest.tenant), name)
        except ClearanceError as exc:
            _fail(exc)
        finally:
            services.close()
    _emit(result, as_json, lambda d: typer.echo(f"source {d['source']} deleted with {d['deleted_documents']} documents"))


def register(app: typer.Typer) -> None:
    app.add_typer(sources_app, name="sources")

