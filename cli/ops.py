"""Operator commands: ``clearance status | sources | jobs | audit export | audit hash-query``.

They read the catalog directly (SQLite or PostgreSQL allow concurrent readers, unlike the Edge
shard a running server holds), so they work whether or not a server is up. Human output by
default, ``--json`` for machines; a domain error is one line and exit code 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from core.errors import ClearanceError
from core.settings import Settings

audit_app = typer.Typer(no_args_is_help=True, help="Export and query the audit trail.")


def _settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Settings) else Settings()


@contextmanager
def _catalog(ctx: typer.Context) -> Iterator[Any]:
    from store.catalog import Catalog

    try:
        settings = _settings(ctx)
        cat = Catalog(settings.catalog_url(), auto_migrate=settings.auto_migrate())
    except ClearanceError as exc:  # e.g. a schema that needs `clearance db upgrade`
        typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # a database that cannot be opened is the operator's first question
        typer.echo(f"error [catalog_unavailable]: cannot open the catalog: {type(exc).__name__}", err=True)
        raise typer.Exit(2) from None
    try:
        yield cat
    except ClearanceError as exc:
        typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
        raise typer.Exit(2) from None
    finally:
        cat.close()


def _emit(data: Any, as_json: bool, human: Any) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        human(data)


def _lag(s: dict[str, Any]) -> str:
    if s["lag_s"] is None:
        return "never synced"
    lag = float(s["lag_s"])
    return f"{lag:.0f} s ago" if lag < 120 else f"{lag / 60:.0f} min ago" if lag < 7200 else f"{lag / 3600:.1f} h ago"


def _print_sources(sources: list[dict[str, Any]]) -> None:
    if not sources:
        typer.echo("no sources yet")
    for s in sources:
        docs = ", ".join(f"{n} {state}" for state, n in sorted(s["documents"].items())) or "no documents"
        sla = f"SLA {s['sla_s']} s" if s["sla_s"] is not None else "no SLA"
        flag = "  STALE" if s["stale"] else ""
        root = f" root={s['root']}" if s["root"] else ""
        typer.echo(f"{s['name']:20s} {s['kind']:10s} last success {_lag(s):>14s}  {sla}; {docs}{root}{flag}")
        if s["last_error"]:
            typer.echo(f"    last error: {s['last_error']}")


def _print_jobs(jobs: list[dict[str, Any]]) -> None:
    if not jobs:
        typer.echo("no jobs yet")
    for j in jobs:
        counts = ", ".join(f"{k} {v}" for k, v in j["counts"].items() if v) or "nothing to do"
        typer.echo(f"job {j['id']:>5} {j['source']:20s} {j['state']:11s} {j['started_at']}  {counts}; {j['chunks']} chunks")
        for e in j["errors"]:
            typer.echo(f"    failed {e['doc']}: [{e['code']}] {e['message']}")


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")

    # `clearance sources [add|show|update|delete]`: cli/sources.py

    @app.command()
    def jobs(ctx: typer.Context, source: str | None = typer.Option(None), limit: int = typer.Option(20, min=1),
             as_json: bool = typer.Option(False, "--json")) -> None:
        """Recent ingestion jobs with their counts and per-document errors."""
        from store.status import job_dicts

        with _catalog(ctx) as cat:
            data = job_dicts(cat, source=source, limit=limit)
        _emit({"jobs": data}, as_json, lambda d: _print_jobs(d["jobs"]))

    @app.command()
    def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json"),
               server: str | None = typer.Option(None, help="also ask a running server's /readyz")) -> None:
        """One screen: catalog, documents, sources and their freshness, last jobs, audit volume."""
        from store.audit import AuditLog
        from store.freshness import Freshness
        from store.status import job_dicts

        s = _settings(ctx)
        with _catalog(ctx) as cat:
            cat.ping()
            srcs = [x.as_dict() for x in Freshness(cat, s.ingest.source_sla_s).statuses()]
            states: dict[str, int] = {}
            for x in srcs:
                for state, n in x["documents"].items():
                    states[state] = states.get(state, 0) + n
            data: dict[str, Any] = {
                "catalog": {"ok": True, "backend": cat.engine.dialect.name},
                "documents": states,
                "sources": srcs,
                "stale_sources": [x["name"] for x in srcs if x["stale"]],
                "jobs": job_dicts(cat, limit=5),
                "audit": {"events": AuditLog(s.audit, cat, prune_on_start=False).count(),
                          "retention_days": s.audit.retention_days},
            }
        if server:
            data["server"] = _readyz(server)
        _emit(data, as_json, _print_status)

    @audit_app.command("export")
    def audit_export(ctx: typer.Context,
                     since: str | None = typer.Option(None, help="ISO 8601 time; naive means UTC"),
                     until: str | None = typer.Option(None, help="ISO 8601 time; naive means UTC"),
                     out: Path | None = typer.Option(None, help="JSONL file (default: stdout)"),
                     kind: str = typer.Option("read", help="read: searches and document reads; write: every "
                                                           "write and refused write")) -> None:
        """Audit events as JSON lines, oldest first."""
        from store.audit import AuditLog, WriteAudit

        s = _settings(ctx)
        if kind not in ("read", "write"):
            typer.echo(f"error [invalid_request]: --kind is read or write, got {kind!r}", err=True)
            raise typer.Exit(2)
        start, end = _when(since, "since"), _when(until, "until")
        n = 0
        with _catalog(ctx) as cat:
            log: Any = AuditLog(s.audit, cat, prune_on_start=False) if kind == "read" else WriteAudit(cat)  # reading must not delete
            fh = out.open("w", encoding="utf-8") if out is not None else sys.stdout
            try:
                for ev in log.export(since=start, until=end):
                    fh.write(json.dumps(ev, sort_keys=True) + "\n")
                    n += 1
            finally:
                if out is not None:
                    fh.close()
        if out is not None:
            typer.echo(f"{n} audit events written to {out}", err=True)

    @audit_app.command("hash-query")
    def audit_hash_query(ctx: typer.Context, query: str = typer.Argument(..., help="query text to look up")) -> None:
        """The query_hash this deployment records for QUERY (to find who searched for it)."""
        from store.audit import AuditLog

        s = _settings(ctx)
        with _catalog(ctx) as cat:
            typer.echo(AuditLog(s.audit, cat, prune_on_start=False).hash_query(query))


def _readyz(server: str) -> dict[str, Any]:
    import httpx

    try:
        resp = httpx.get(server.rstrip("/") + "/readyz", timeout=5)
        return {"url": server, "http_status": resp.status_code, **resp.json()}
    except (httpx.HTTPError, ValueError) as exc:
        return {"url": server, "status": "unreachable", "error": type(exc).__name__}


def _print_status(d: dict[str, Any]) -> None:
    docs = ", ".join(f"{n} {state}" for state, n in sorted(d["documents"].items())) or "none"
    typer.echo(f"catalog: ok ({d['catalog']['backend']})")
    typer.echo(f"documents: {docs}")
    stale = ", ".join(d["stale_sources"]) or "none"
    typer.echo(f"sources: {len(d['sources'])} (stale: {stale})")
    _print_sources(d["sources"])
    typer.echo("recent jobs:")
    _print_jobs(d["jobs"])
    typer.echo(f"audit: {d['audit']['events']} events kept (retention {d['audit']['retention_days']} days)")
    if "server" in d:
        srv = d["server"]
        typer.echo(f"server {srv['url']}: {srv.get('status')}")


def _when(value: str | None, name: str) -> datetime | None:
    """ISO 8601 (``2026-01-31``, ``2026-01-31T12:00:00+02:00``); a naive time means UTC."""
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        typer.echo(f"error [invalid_request]: --{name} is not an ISO 8601 time: {value!r}", err=True)
        raise typer.Exit(2) from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt
