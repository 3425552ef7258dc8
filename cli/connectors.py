"""``clearance sync SOURCE [--permissions]``: run a connector source's content (default) or
permission sync now, through the same engine, lock and audit as the scheduler (``app.connectors``).

The sync writes the index, so it opens it; when a running server owns the index the CLI asks
that server instead (``POST /v1/admin/sources/NAME/sync``; in dev mode with a token the CLI
mints, else ``--token`` with ``clearance:admin``). Exit status: 0 when the run succeeded (some
documents may have failed alone: listed), 1 when the run failed, 2 on a domain error.
"""

from __future__ import annotations

from typing import Any

import typer

from core.errors import ClearanceError
from core.settings import Settings


def connector_status(settings: Settings, catalog: Any, name: str) -> dict[str, Any]:
    from app.connectors import connector_status as status
    from store.connectors import ConnectorStore

    row = ConnectorStore(catalog).source(name)
    return status(catalog, row) if row is not None else {}


def print_connector(d: dict[str, Any]) -> None:
    typer.echo(f"  connector: {d['connector']} (content every {d['content_interval_s']} s, "
               f"permissions every {d['permission_interval_s']} s)")
    for name, st in sorted(d.get("streams", {}).items()):
        line = (f"  {name}: {st.get('runs', 0)} runs, {st.get('failures', 0)} failed, {st.get('missed', 0)} missed; "
                f"last {st.get('last_outcome') or 'never'}")
        if st.get("last_error"):
            line += f" ({st['last_error']})"
        if st.get("overdue"):
            line += "; OVERDUE"
        typer.echo(line)
    unmapped = d.get("unmapped", [])
    if unmapped:
        typer.echo(f"  unmapped identities ({len(unmapped)}; they grant nothing, an unmapped deny makes a document private):")
        for u in unmapped[:50]:
            typer.echo(f"    {u['namespace']}/{u['kind']}/{u['name']}  seen {u['count']}x, last {u['last_seen']}")


def print_report(d: dict[str, Any]) -> None:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(d["counts"].items())) or "nothing to do"
    typer.echo(f"{d['source']} {d['stream']}: {d['outcome']} ({counts}) in {d['seconds']} s")
    if d.get("error"):
        typer.echo(f"error [{d['error']['code']}]: {d['error']['message']}", err=True)
    for e in d.get("errors", []):
        typer.echo(f"  {e['doc']}: [{e['code']}] {e['message']}", err=True)
    if d.get("private_docs"):
        typer.echo(f"  made private by an unmapped deny: {', '.join(d['private_docs'])}")
    if d.get("unmapped"):
        typer.echo(f"  unmapped identities: {', '.join(d['unmapped'][:20])}")


def register(app: typer.Typer) -> None:
    @app.command("sync")
    def sync(ctx: typer.Context, source: str = typer.Argument(...),
             permissions: bool = typer.Option(False, "--permissions", help="the permission sync (never re-embeds)"),
             server: str | None = typer.Option(None, help="running server (default: the one recorded in the data dir)"),
             token: str | None = typer.Option(None, envvar="CLEARANCE_TOKEN", help="token with clearance:admin (oidc)"),
             as_json: bool = typer.Option(False, "--json")) -> None:
        """Run a connector source's content (or --permissions) sync now."""
        from app.services import build_services
        from cli.ops import _emit, _settings
        from cli.sources import _fail

        s = _settings(ctx)
        stream = "permissions" if permissions else "content"
        try:
            services = build_services(s)
        except ClearanceError as exc:
            if exc.code != "index_locked":
                _fail(exc)
            from cli.main import _call, _cli_token, _server_url

            resp = _call(_server_url(s, server), "POST", f"/v1/admin/sources/{source}/sync?stream={stream}",
                         _cli_token(s, token, "clearance:admin"))
            if resp.pop("_status") != 200:
                err = resp.get("error", {})
                _fail(ClearanceError(err.get("message", ""), code=err.get("code", "http_error")))
            report = resp
        else:
            try:
                assert services.connectors is not None
                report = services.connectors.run(source, stream).as_dict()
            except ClearanceError as exc:
                _fail(exc)
            finally:
                services.close()
        _emit(report, as_json, print_report)
        if report["outcome"] == "failed":
            raise typer.Exit(1)
