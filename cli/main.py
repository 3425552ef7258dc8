"""The one CLI: ``clearance serve | ingest | token | whoami | config show``.

Heavy imports live inside the commands; a domain error becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer

from cli import ops as cli_ops
from core.errors import ClearanceError
from core.settings import Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Clearance: entitlement-aware retrieval.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect configuration.")
app.add_typer(config_app, name="config")
eval_app = typer.Typer(no_args_is_help=True, help="Measure retrieval quality and leakage.")
app.add_typer(eval_app, name="eval")


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj  # type: ignore[no-any-return]


@app.callback()
def main(ctx: typer.Context) -> None:
    try:
        ctx.obj = load_settings()
    except ClearanceError as exc:  # one line per misspelt or invalid CLEARANCE_* variable
        _fail(exc)


def _fail(exc: ClearanceError) -> NoReturn:
    """A domain error: one line on stderr per problem it lists, exit code 2."""
    for line in exc.message.splitlines() or [""]:
        typer.echo(f"error [{exc.code}]: {line}", err=True)
    raise typer.Exit(2)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(ctx: typer.Context, host: Optional[str] = None, port: Optional[int] = None) -> None:
    """Serve the HTTP API (owns the index while it runs)."""
    import uvicorn

    from api.app import create_app

    s = _settings(ctx)
    host = host or s.server.host
    port = port or s.server.port
    if s.auth.mode == "dev" and not _is_loopback(host) and not s.server.allow_non_loopback_in_dev:
        _fail(ClearanceError(
            f"dev auth mode refuses to bind {host}: set CLEARANCE_SERVER__ALLOW_NON_LOOPBACK_IN_DEV=true to force",
            code="dev_mode_exposed"))
    try:
        uvicorn.run(create_app(s), host=host, port=port, log_config=None, access_log=False)
    except ClearanceError as exc:
        _fail(exc)


@app.command()
def ingest(
    ctx: typer.Context,
    path: Path = typer.Argument(..., exists=True, file_okay=False, help="folder to sync (with an optional acl.toml)"),
    source: Optional[str] = typer.Option(None, help="source name (default: the folder name)"),
    server: str = typer.Option("http://127.0.0.1:8000", help="running server to submit to when it owns the index"),
    token: Optional[str] = typer.Option(None, envvar="CLEARANCE_TOKEN", help="token with clearance:ingest (oidc mode)"),
    queue: bool = typer.Option(False, "--queue", help="only enqueue the folder's documents for `clearance worker`"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Sync a folder into the index: added, changed, ACL-only and deleted documents."""
    from app.services import build_services
    from ingest.sources import FilesystemSource

    s = _settings(ctx)
    if queue:
        _enqueue(s, path, source)
        return
    try:
        services = build_services(s)
    except ClearanceError as exc:
        if exc.code != "index_locked":
            _fail(exc)
        result = _submit(s, server, token, path, source)
    else:
        try:
            src = FilesystemSource(path, source)
            total = len(src.paths())
            with typer.progressbar(length=total, label=f"ingesting {src.name}", file=sys.stderr) as bar:
                report = services.ingestor.sync(src, progress=lambda _k, outcome: bar.update(0 if outcome == "deleted" else 1))
            result = report.as_dict()
        except ClearanceError as exc:
            _fail(exc)
        finally:
            services.close()
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result["counts"].items())) or "nothing to do"
    typer.echo(f"job {result['job_id']}: {counts}; {result['chunks']} chunks written in {result['seconds']} s")
    for e in result["errors"]:
        typer.echo(f"  failed {e['doc']}: [{e['code']}] {e['message']}")


def _enqueue(s: Settings, path: Path, source: Optional[str]) -> None:
    """Enqueueing needs only the catalog, never the index, so it works while a server runs."""
    from store.catalog import Catalog
    from store.queue import WorkQueue
    from ingest.worker import enqueue_folder

    catalog = Catalog(s.catalog_url())
    try:
        queue = WorkQueue(catalog)
        job_id = enqueue_folder(queue, s.ingest.tenant, path, source)
        typer.echo(f"job {job_id}: queued {queue.counts(job_id).get('queued', 0)} documents for `clearance worker`")
    finally:
        catalog.close()


@app.command()
def worker(
    ctx: typer.Context,
    once: bool = typer.Option(False, help="stop when the queue is empty"),
    batch: int = typer.Option(16, help="documents claimed (and embedded) per batch"),
    lease: float = typer.Option(300.0, help="seconds a claim is held before another worker may take it"),
) -> None:
    """Process queued ingestion items (several workers may run against PostgreSQL + Qdrant server)."""
    import os
    import socket

    from app.services import build_services
    from store.queue import WorkQueue
    from ingest.worker import run_worker

    s = _settings(ctx)
    try:
        services = build_services(s)
    except ClearanceError as exc:
        _fail(exc)
    try:
        worker_id = f"{socket.gethostname()}:{os.getpid()}"
        n = run_worker(services.ingestor, WorkQueue(services.catalog), worker_id, batch=batch, lease_s=lease, once=once)
        typer.echo(f"worker {worker_id}: processed {n} items")
    finally:
        services.close()


def _submit(s: Settings, server: str, token: Optional[str], path: Path, source: Optional[str]) -> dict[str, Any]:
    """The server owns the Edge index: hand the folder to it instead of opening the store."""
    import httpx

    if token is None:
        if s.auth.mode != "dev":
            _fail(ClearanceError("the index is owned by a running server; pass --token with clearance:ingest", code="index_locked"))
        from auth.dev_issuer import DevIssuer

        token = DevIssuer(s.auth, s.storage.dev_key_path).mint("clearance-cli", scopes=["clearance:ingest"])
    typer.echo(f"index is owned by the server at {server}; submitting the folder to it", err=True)
    try:
        resp = httpx.post(f"{server}/v1/ingest/jobs", json={"path": str(path.resolve()), "source": source},
                          headers={"authorization": f"Bearer {token}"}, timeout=3600)
    except httpx.HTTPError as exc:
        _fail(ClearanceError(f"index is locked and the server is unreachable: {exc}", code="index_locked"))
    if resp.status_code != 200:
        err = resp.json().get("error", {}) if resp.headers.get("content-type", "").startswith("application/json") else {}
        _fail(ClearanceError(err.get("message", resp.text[:200]), code=err.get("code", f"http_{resp.status_code}")))
    return resp.json()  # type: ignore[no-any-return]


@app.command()
def token(
    ctx: typer.Context,
    sub: str = typer.Option(..., help="subject (user id)"),
    group: list[str] = typer.Option([], help="group claim; repeat for several"),
    role: list[str] = typer.Option([], help="role claim; repeat for several"),
    scope: list[str] = typer.Option(["clearance:search"], help="OAuth scope; repeat for several"),
    ttl: int = typer.Option(3600, help="lifetime in seconds"),
) -> None:
    """Mint a token from the dev issuer (auth.mode=dev only)."""
    from auth.dev_issuer import DevIssuer

    s = _settings(ctx)
    if s.auth.mode != "dev":
        _fail(ClearanceError("tokens can only be minted in auth.mode=dev", code="not_dev_mode"))
    typer.echo(DevIssuer(s.auth, s.storage.dev_key_path).mint(sub, groups=group, roles=role, scopes=scope, ttl_s=ttl))


@app.command()
def whoami(ctx: typer.Context, token: str = typer.Option(..., envvar="CLEARANCE_TOKEN"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Validate a token locally and show the principals it resolves to."""
    from auth.authenticator import build_authenticator

    s = _settings(ctx)
    try:
        ent = build_authenticator(s.auth, s.storage.dev_key_path).authenticate(f"Bearer {token}")
    except ClearanceError as exc:
        _fail(exc)
    data = {"subject": ent.subject, "issuer": ent.issuer, "tenant": ent.tenant,
            "principals": sorted(ent.principals), "scopes": sorted(ent.scopes)}
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        for k, v in data.items():
            typer.echo(f"{k}: {', '.join(v) if isinstance(v, list) else v}")


@app.command("mcp")
def mcp_stdio(
    ctx: typer.Context,
    token: Optional[str] = typer.Option(None, envvar="CLEARANCE_TOKEN", help="the user's access token"),
    sub: str = typer.Option("", help="dev mode without a token: mint one for this subject"),
    group: list[str] = typer.Option([], help="dev mode without a token: group claim; repeat for several"),
) -> None:
    """Serve the MCP tools (search, fetch) on stdin/stdout for a local assistant, with the
    permissions of the token's holder (re-validated on every call). Opens the index itself, so
    it runs where no server owns the shard (or against Qdrant server)."""
    from api.mcp import run_stdio
    from app.services import build_services
    from core.logging import configure

    s = _settings(ctx)
    configure(s.log_level)  # JSON logs on stderr: stdout carries the protocol only
    if not token:
        if s.auth.mode != "dev" or not sub:
            _fail(ClearanceError("set CLEARANCE_TOKEN (or, in auth.mode=dev, pass --sub to mint one)",
                                 code="missing_token"))
        from auth.dev_issuer import DevIssuer

        dev = DevIssuer(s.auth, s.storage.dev_key_path)
        minted = dev.mint(sub, groups=group)
        token = minted
    bearer = token
    try:
        services = build_services(s)
    except ClearanceError as exc:
        _fail(exc)
    try:
        run_stdio(services, lambda: bearer)
    finally:
        services.close()


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the effective settings with secrets masked."""
    typer.echo(json.dumps(_settings(ctx).masked(), indent=2))


@eval_app.command("run")
def eval_run(
    ctx: typer.Context,
    dataset: Path = typer.Option(..., exists=True, file_okay=False, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"),
    mode: list[str] = typer.Option(["bm25", "dense", "hybrid"], help="modes to evaluate; repeat"),
    out: Path = typer.Option(Path("reports/eval"), help="where the JSON, markdown and plots go"),
    queries_jsonl: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                                 help="production queries with judgments, replacing the dataset's"),
    max_docs: Optional[int] = typer.Option(None, help="subsample the corpus (judged documents kept)"),
    max_queries: Optional[int] = typer.Option(None),
    embedder: str = typer.Option("minilm", help="minilm (real) or hash (fast, for smoke tests)"),
    personas: bool = typer.Option(True, help="entitlement and freshness evaluation"),
    rrf_k: Optional[int] = typer.Option(None),
) -> None:
    """Evaluate bm25/dense/hybrid on a BEIR dataset through the production pipeline."""
    from eval import report as reports
    from eval.beir import load_beir, load_query_jsonl
    from eval.harness import EvalConfig
    from eval.harness import run as run_eval

    s = _settings(ctx)
    ds = load_beir(dataset, max_docs=max_docs, max_queries=max_queries)
    if queries_jsonl is not None:
        queries, qrels = load_query_jsonl(queries_jsonl)
        ds = type(ds)(ds.name, ds.corpus, queries, qrels)
    retrieval = s.retrieval.model_copy(update={"max_top_k": 1000, **({"rrf_k": rrf_k} if rrf_k else {})})
    # BM25 vectors are fixed at ingestion, so a different tokenization needs its own collection.
    variant = "" if (s.retrieval.bm25_stem and s.retrieval.bm25_stop_words) else \
        f"-stem{int(s.retrieval.bm25_stem)}-stop{int(s.retrieval.bm25_stop_words)}"
    cfg = EvalConfig(work_dir=s.storage.data_dir / "eval" / f"{ds.name}-{embedder}{variant}",
                     cache_path=s.storage.data_dir / "cache" / "embeddings.sqlite3",
                     modes=tuple(mode), embedder=embedder, personas=personas, retrieval=retrieval,  # type: ignore[arg-type]
                     progress=lambda msg: typer.echo(f"[{ds.name}] {msg}", err=True))
    try:
        result = run_eval(ds, cfg)
    except ClearanceError as exc:
        _fail(exc)
    paths = reports.write(result, out)
    head = reports.headline(result)
    for m, v in head["modes"].items():
        typer.echo(f"{ds.name} {m:7s} " + "  ".join(f"{k} {x:.4f}" for k, x in v.items()))
    typer.echo(f"report: {paths['md']}")
    problems = reports.check(result, {"modes": {}}, 0.0)
    if problems:
        typer.echo("FAILED: " + "; ".join(problems), err=True)
        raise typer.Exit(1)


@eval_app.command("check")
def eval_check(
    report: Path = typer.Option(..., exists=True, dir_okay=False),
    baseline: Path = typer.Option(..., exists=True, dir_okay=False),
    tolerance: float = typer.Option(0.01, help="allowed drop per metric"),
) -> None:
    """Exit non-zero when a report regresses against a baseline (for CI)."""
    from eval import report as reports

    problems = reports.check(reports.load(report), reports.load(baseline), tolerance)
    for p in problems:
        typer.echo(f"regression: {p}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo("no regression")


cli_ops.register(app)  # status, sources, jobs, audit


def run() -> None:
    try:
        app()
    except ClearanceError as exc:  # pragma: no cover - last resort for errors raised outside commands
        for line in exc.message.splitlines() or [""]:
            typer.echo(f"error [{exc.code}]: {line}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # ``python -m cli.main`` (the tests' subprocesses)
    run()
