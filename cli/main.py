"""The one CLI: ``clearance serve | ingest | token | whoami | config show``.

Heavy imports live inside the commands; a domain error becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from pydantic import ValidationError

from cli import connectors as cli_connectors
from cli import maintenance as cli_maintenance
from cli import ops as cli_ops
from cli import sources as cli_sources
from core.errors import ClearanceError
from core.settings import IngestSettings, RetrievalSettings, Settings, load_settings

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
    for line in [ln.strip() for ln in exc.message.splitlines() if ln.strip()] or [""]:
        typer.echo(f"error [{exc.code}]: {line}", err=True)
    raise typer.Exit(2)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


CLI_SUBJECT = "clearance-cli"  # the subject of the dev tokens the CLI mints for itself
CLI_WRITER = f"user:{CLI_SUBJECT}"  # default writer of a source `clearance ingest` registers in dev mode


def _dev_issuer(s: Settings) -> Any:
    """The dev issuer as the running server serves it: its ``iss`` is the address the server
    recorded (``cli.runtime``) unless ``auth.dev_issuer`` is configured explicitly."""
    from auth.dev_issuer import DevIssuer
    from cli.runtime import running_server

    auth = s.auth
    rec = running_server(s.storage.data_dir)
    if rec is not None and rec.dev_issuer and "dev_issuer" not in auth.model_fields_set:
        auth = auth.model_copy(update={"dev_issuer": rec.dev_issuer})
    return DevIssuer(auth, s.storage.dev_key_path)


def _server_url(s: Settings, explicit: str | None) -> str:
    """--server, else the address the running server recorded, else the configured one."""
    from cli.runtime import running_server, url_for

    if explicit:
        return explicit.rstrip("/")
    rec = running_server(s.storage.data_dir)
    return rec.url if rec is not None else url_for(s.server.host, s.server.port)


@app.command()
def serve(ctx: typer.Context, host: str | None = None, port: int | None = None) -> None:
    """Serve the HTTP API (owns the index while it runs; records its address in the data dir)."""
    from cli.runtime import ServerLock, url_for

    s = _settings(ctx)
    host = host or s.server.host
    port = port or s.server.port
    if s.auth.mode == "dev" and not _is_loopback(host) and not s.server.allow_non_loopback_in_dev:
        _fail(ClearanceError(
            f"dev auth mode refuses to bind {host}: set CLEARANCE_SERVER__ALLOW_NON_LOOPBACK_IN_DEV=true to force",
            code="dev_mode_exposed"))
    if s.auth.mode == "dev" and "dev_issuer" not in s.auth.model_fields_set:
        # The dev issuer's iss is where it is served (its JWKS: /dev-issuer/jwks.json).
        s.auth = s.auth.model_copy(update={"dev_issuer": f"{url_for(host, port)}/dev-issuer"})
    lock = ServerLock(s.storage.data_dir)
    try:
        lock.acquire(host, port, s.auth.dev_issuer if s.auth.mode == "dev" else None)
    except ClearanceError as exc:
        _fail(exc)
    try:
        import uvicorn  # heavy imports after the lock: a second serve fails at once

        from api.app import create_app
        from app.services import build_services

        try:
            services = build_services(s)  # a locked index or a bad catalog: one line, not a traceback
        except ClearanceError as exc:
            if exc.code == "index_locked":
                exc = ClearanceError(f"{exc.message} (another process, e.g. a `clearance ingest`, holds it)",
                                     code=exc.code)
            _fail(exc)
        scheduler = None
        if s.scheduler.in_serve and services.connectors is not None:  # connector syncs (app.scheduler)
            from app.scheduler import Scheduler

            scheduler = Scheduler(services.connectors)
            scheduler.start()
        try:
            uvicorn.run(create_app(s, services), host=host, port=port, log_config=None, access_log=False)
        finally:
            if scheduler is not None:
                scheduler.stop()
            services.close()
    except ClearanceError as exc:
        _fail(exc)
    finally:
        lock.release()


def _default_writers(s: Settings, writer: list[str]) -> list[str]:
    """Writers of a source the CLI registers: --writer, else (dev mode) the CLI's own identity,
    so that a later `clearance ingest` handed to a running server may write it."""
    if writer:
        return writer
    return [CLI_WRITER] if s.auth.mode == "dev" else []


MAX_LISTED_WARNINGS = 50


def _print_warnings(warnings: list[str]) -> None:
    for w in warnings[:MAX_LISTED_WARNINGS]:
        typer.echo(f"  warning {w}")
    if len(warnings) > MAX_LISTED_WARNINGS:
        typer.echo(f"  ... and {len(warnings) - MAX_LISTED_WARNINGS} more warnings (--json lists them all)")


@app.command()
def ingest(
    ctx: typer.Context,
    path: Path = typer.Argument(..., exists=True, file_okay=False, help="folder to sync (with an optional acl.toml)"),
    source: str | None = typer.Option(None, help="source name (default: the folder name)"),
    server: str | None = typer.Option(None, help="running server to submit to when it owns the index "
                                                    "(default: the one recorded in the data dir)"),
    token: str | None = typer.Option(None, envvar="CLEARANCE_TOKEN", help="token with clearance:ingest (oidc mode)"),
    queue: bool = typer.Option(False, "--queue", help="only enqueue the folder's documents for `clearance worker`"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print each file's allow/deny and what the sync would "
                                                          "add, change and delete; write nothing"),
    allow_deletes: bool = typer.Option(False, "--allow-deletes", help="let the sync delete more than "
                                       "ingest.max_delete_fraction of the source's documents, or all of them"),
    writer: list[str] = typer.Option([], help="writer principal of the source if this registers it; repeat "
                                              f"(default in dev mode: {CLI_WRITER})"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Sync a folder into the index: added, changed, ACL-only, metadata-only and deleted documents.

    A new source is registered as a filesystem source rooted at the folder. The manifest is
    checked first (every problem listed, nothing written); files no principal can read are
    listed as warnings; a sync that would delete too much is refused unless --allow-deletes."""
    from app.services import build_services
    from auth.local import operator_entitlements
    from ingest.sources import FilesystemSource

    s = _settings(ctx)
    if dry_run:
        _dry_run(s, path, source, allow_deletes, as_json)
        return
    if queue:
        _enqueue(s, path, source, _default_writers(s, writer), allow_deletes)
        return
    try:
        services = build_services(s)
    except ClearanceError as exc:
        if exc.code != "index_locked":
            _fail(exc)
        result = _submit(s, server, token, path, source, allow_deletes)
    else:
        try:
            total = len(FilesystemSource(path, source, tenant=s.ingest.tenant).doc_ids())  # manifest problems first
            with typer.progressbar(length=total, label=f"ingesting {source or path.resolve().name}",
                                   file=sys.stderr) as bar:
                report = services.writes.sync_local(
                    operator_entitlements(s.ingest.tenant), path, source, writers=_default_writers(s, writer),
                    allow_deletes=allow_deletes, progress=lambda _k, outcome: bar.update(0 if outcome == "deleted" else 1))
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
    _print_warnings(result.get("warnings", []))


def _dry_run(s: Settings, path: Path, source: str | None, allow_deletes: bool, as_json: bool) -> None:
    """What a sync of ``path`` would do, from the catalog alone (works while a server runs)."""
    from ingest.plan import plan_sync
    from ingest.sources import PRIVATE_WARNING, FilesystemSource
    from store.catalog import Catalog

    try:
        src = FilesystemSource(path, source, tenant=s.ingest.tenant)
        catalog = Catalog(s.catalog_url(), auto_migrate=s.auto_migrate())
    except ClearanceError as exc:
        _fail(exc)
    try:
        plan = plan_sync(catalog, s.ingest.tenant, src, s.ingest.max_delete_fraction, allow_deletes)
    finally:
        catalog.close()
    if as_json:
        typer.echo(json.dumps(plan.as_dict(), indent=2))
        return
    typer.echo(f"dry run: {src.root} -> source {plan.source} (holds {plan.holds} documents); nothing is written")
    for f in plan.files:
        acl = f"allow [{', '.join(sorted(f.acl.allow))}]" if f.acl.allow else PRIVATE_WARNING
        deny = f" deny [{', '.join(sorted(f.acl.deny))}]" if f.acl.deny else ""
        typer.echo(f"  {f.action:9s} {f.doc_id}: {acl}{deny}")
    for d in plan.deletes:
        typer.echo(f"  {'delete':9s} {d}")
    for sk in plan.skipped:
        typer.echo(f"  {'skip':9s} {sk.rel}: [{sk.code}] {sk.message}")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(plan.counts().items())) or "nothing to do"
    typer.echo(f"would: {counts}")
    _print_warnings(plan.warnings)
    if plan.guard:
        typer.echo(f"the sync would be refused [mass_delete_refused]: {plan.guard}")


def _enqueue(s: Settings, path: Path, source: str | None, writers: list[str], allow_deletes: bool) -> None:
    """Enqueueing needs only the catalog, never the index, so it works while a server runs."""
    from app.sources import SourceRegistry
    from auth.local import operator_entitlements
    from ingest.worker import enqueue_folder
    from store.audit import WriteAudit
    from store.catalog import Catalog
    from store.queue import WorkQueue

    catalog = Catalog(s.catalog_url(), auto_migrate=s.auto_migrate())
    try:
        name = source or path.resolve().name
        registry = SourceRegistry(s, catalog, WriteAudit(catalog))
        row = registry.get(name)
        operator = operator_entitlements(s.ingest.tenant)
        if row is None:
            registry.create(operator, name, "filesystem", writers, str(path.resolve()), local=True)
        elif row.kind != "filesystem":
            _fail(ClearanceError(f"source {name!r} is a push source: a folder cannot be queued into it",
                                 code="source_kind_mismatch"))
        queue = WorkQueue(catalog)
        job_id = enqueue_folder(queue, s.ingest.tenant, path, name, max_delete_fraction=s.ingest.max_delete_fraction,
                                allow_deletes=allow_deletes)
        registry.event(operator, "queue", "queued", source=name, job_id=job_id,
                       detail={"path": str(path.resolve()), "allow_deletes": allow_deletes})
        typer.echo(f"job {job_id}: queued {queue.counts(job_id).get('queued', 0)} documents for `clearance worker`")
    except ClearanceError as exc:
        _fail(exc)
    finally:
        catalog.close()


@app.command()
def worker(
    ctx: typer.Context,
    once: bool = typer.Option(False, help="stop when the queue is empty"),
    batch: int = typer.Option(16, help="documents claimed (and embedded) per batch"),
    lease: float = typer.Option(300.0, help="seconds a claim is held before another worker may take it"),
    connectors: bool = typer.Option(True, help="run the connector scheduler (app.scheduler) alongside the queue"),
) -> None:
    """Process queued ingestion items and run connector syncs when due (several workers may run
    against PostgreSQL + Qdrant server; each queue item and each connector sync runs once)."""
    import os
    import socket

    from app.services import build_services
    from ingest.worker import run_worker
    from store.queue import WorkQueue

    s = _settings(ctx)
    try:
        services = build_services(s)
    except ClearanceError as exc:
        _fail(exc)
    scheduler = None
    try:
        worker_id = f"{socket.gethostname()}:{os.getpid()}"
        if connectors and services.connectors is not None:
            from app.scheduler import Scheduler

            scheduler = Scheduler(services.connectors)
            if once:  # one pass over the due connector streams, then the queue
                runs = scheduler.tick()
                typer.echo(f"worker {worker_id}: {len(runs)} connector syncs "
                           f"({sum(r.outcome == 'failed' for r in runs)} failed)")
                scheduler = None
            else:
                scheduler.start()
        n = run_worker(services.ingestor, WorkQueue(services.catalog), worker_id, batch=batch, lease_s=lease, once=once)
        typer.echo(f"worker {worker_id}: processed {n} items")
    finally:
        if scheduler is not None:
            scheduler.stop()
        services.close()


def _submit(s: Settings, server: str | None, token: str | None, path: Path, source: str | None,
            allow_deletes: bool = False) -> dict[str, Any]:
    """The server owns the Edge index: hand the folder to it instead of opening the store."""
    from cli.runtime import running_server

    if server is None and running_server(s.storage.data_dir) is None:
        _fail(ClearanceError(f"the index under {s.storage.data_dir} is locked by another process that is not a "
                             "server (no server.json): another `clearance ingest` or worker; wait for it to finish",
                             code="index_locked"))
    url = _server_url(s, server)
    token = _cli_token(s, token, "clearance:ingest")
    typer.echo(f"index is owned by the server at {url}; submitting the folder to it", err=True)
    name = source or path.resolve().name
    resp = _call(url, "POST", "/v1/ingest/jobs", token,
                 {"path": str(path.resolve()), "source": name, "allow_deletes": allow_deletes})
    if resp["_status"] != 200:
        err = resp.get("error", {})
        code, message = err.get("code", f"http_{resp['_status']}"), err.get("message", "")
        if code == "unknown_source":
            message += (f"\nregister it first (works while the server runs): clearance sources add {name} "
                        f"--kind filesystem --root {path.resolve()} --writer {CLI_WRITER if s.auth.mode == 'dev' else 'P'}")
        _fail(ClearanceError(message, code=code))
    resp.pop("_status")
    return resp


def _cli_token(s: Settings, token: str | None, scope: str) -> str:
    """--token / CLEARANCE_TOKEN, else (dev mode) a token the CLI mints for itself."""
    if token:
        return token
    if s.auth.mode != "dev":
        _fail(ClearanceError(f"the index is owned by a running server; pass --token with {scope}", code="index_locked"))
    return str(_dev_issuer(s).mint(CLI_SUBJECT, scopes=[scope]))


def _call(url: str, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request to the running server through the Python client (``client``: its error tree,
    503 + Retry-After retries); its JSON answer with ``_status``."""
    import httpx

    from client import Client
    from client.errors import ClearanceError as ApiError

    try:
        with Client(url, token=token, timeout_s=3600) as api:
            data = api.request(method, path, json=body) if body is not None else api.request(method, path)
    except ApiError as exc:
        return {"error": {"code": exc.code, "message": exc.message}, "_status": exc.status}
    except httpx.HTTPError as exc:
        _fail(ClearanceError(f"the index is locked and the server at {url} is unreachable: {exc}", code="index_locked"))
    return {**(data if isinstance(data, dict) else {"result": data}), "_status": 200}


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
    s = _settings(ctx)
    if s.auth.mode != "dev":
        _fail(ClearanceError("tokens can only be minted in auth.mode=dev", code="not_dev_mode"))
    typer.echo(_dev_issuer(s).mint(sub, groups=group, roles=role, scopes=scope, ttl_s=ttl))


@app.command()
def whoami(ctx: typer.Context, token: str = typer.Option(..., envvar="CLEARANCE_TOKEN"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Validate a token locally and show the principals it resolves to."""
    from auth.authenticator import build_authenticator

    s = _settings(ctx)
    auth = s.auth
    if auth.mode == "dev":
        auth = _dev_issuer(s).settings  # the iss the running server's dev issuer uses
    try:
        ent = build_authenticator(auth, s.storage.dev_key_path).authenticate(f"Bearer {token}")
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
    token: str | None = typer.Option(None, envvar="CLEARANCE_TOKEN", help="the user's access token"),
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
    dataset: Path | None = typer.Option(None, exists=True, file_okay=False,
                                        help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"),
    live: bool = typer.Option(False, "--live", help="evaluate this deployment's own index, catalog and ACLs (label-free)"),
    personas_file: Path | None = typer.Option(None, "--personas", exists=True, dir_okay=False,
                                              help="--live: principal sets to ask as (YAML or JSON)"),
    queries: Path | None = typer.Option(None, "--queries", exists=True, dir_okay=False,
                                        help="--live: a query-set JSONL (`clearance eval sample`) asked too"),
    baseline: Path | None = typer.Option(None, exists=True, dir_okay=False,
                                         help="--live: a previous live report; stability and the gate in the report"),
    qrels_file: Path | None = typer.Option(None, "--qrels", exists=True, dir_okay=False,
                                           help="--live: judgments of --queries (`eval judge import`): nDCG@10 and judged@10"),
    seed: int = typer.Option(13, help="--live: known-item generation seed"),
    max_docs_per_persona: int | None = typer.Option(None, help="--live: known-item documents per persona"),
    rbo_min: float = typer.Option(0.95, help="--live with --baseline: minimum mean RBO@10"),
    tolerance: float = typer.Option(0.01, help="--live with --baseline: allowed drop (and stale-baseline margin)"),
    mode: list[str] = typer.Option(["bm25", "dense", "hybrid"], help="modes to evaluate; repeat (--live: one, default hybrid)"),
    out: Path | None = typer.Option(None, help="report folder (default var/eval, untracked)"),
    queries_jsonl: Path | None = typer.Option(None, exists=True, dir_okay=False,
                                              help="production queries with judgments, replacing the dataset's"),
    max_docs: int | None = typer.Option(None, help="subsample the corpus (judged documents kept)"),
    max_queries: int | None = typer.Option(None),
    embedder: str = typer.Option("minilm", help="minilm (real) or hash (fast, for smoke tests)"),
    personas: bool = typer.Option(True, "--with-personas/--no-personas",
                                  help="entitlement and freshness evaluation (simulated personas)"),
    known_items: int = typer.Option(200, help="documents sampled for the label-free known-item MRR per mode (0: off)"),
    identifiers: int = typer.Option(200, help="identifier queries (rare codes and names) for success@1/@10 per mode (0: off)"),
    fusion: str | None = typer.Option(None, help="hybrid fusion: relative or rrf (default: the settings')"),
    rrf_k: int | None = typer.Option(None, help="RRF's k (with --fusion rrf, or settings whose fusion is rrf)"),
) -> None:
    """Evaluate bm25/dense/hybrid on a BEIR dataset through the production pipeline, or (--live)
    this deployment's own corpus for the people in a personas file."""
    from eval import report as reports
    from eval.beir import check_known_ids, load_beir, load_query_jsonl
    from eval.harness import EvalConfig
    from eval.harness import run as run_eval
    from eval.html import DEFAULT_OUT

    s = _settings(ctx)
    if live:
        if dataset is not None or queries_jsonl is not None:
            _fail(ClearanceError("--live evaluates the deployment itself: drop --dataset/--queries-jsonl", code="usage"))
        if personas_file is None:
            _fail(ClearanceError("--live needs --personas FILE (principal sets to evaluate as)", code="usage"))
        if mode == ["bm25", "dense", "hybrid"]:  # the labelled default: live runs one mode
            mode = ["hybrid"]
        if len(mode) != 1:
            _fail(ClearanceError("--live evaluates one mode at a time", code="usage"))
        s = s.model_copy(update={"retrieval": _ranking_overrides(s.retrieval, fusion, rrf_k)})
        _eval_live(s, personas_file, queries, baseline, mode[0], seed, max_docs_per_persona, rbo_min, tolerance,
                   out or DEFAULT_OUT, qrels_file)
        return
    if dataset is None:
        _fail(ClearanceError("pass --dataset BEIR_DIR, or --live --personas FILE", code="usage"))
    if personas_file or queries or baseline or qrels_file:
        _fail(ClearanceError("--personas, --queries, --baseline and --qrels belong to --live runs", code="usage"))
    retrieval = _ranking_overrides(s.retrieval, fusion, rrf_k).model_copy(update={"max_top_k": 1000})
    try:
        ds = load_beir(dataset, max_docs=max_docs, max_queries=max_queries)
        work_name = ds.name
        if queries_jsonl is not None:
            q_texts, qrels = load_query_jsonl(queries_jsonl)
            check_known_ids(qrels, ds.corpus.keys(), str(queries_jsonl))
            if not any(qrels.values()):
                raise ClearanceError(f"{queries_jsonl}: no query has a relevant document; for a label-free run use "
                                     "`clearance eval run --live`", code="no_labels")
            # Its own report name: a production query set never overwrites the dataset's report.
            ds = type(ds)(f"{ds.name}+{queries_jsonl.stem}", ds.corpus, q_texts, qrels)
    except ClearanceError as exc:
        _fail(exc)
    # BM25 vectors and chunks are fixed at ingestion, so a different tokenization or chunking
    # needs its own collection.
    variant = "" if (s.retrieval.bm25_stem and s.retrieval.bm25_stop_words) else \
        f"-stem{int(s.retrieval.bm25_stem)}-stop{int(s.retrieval.bm25_stop_words)}"
    chunking = (s.ingest.chunk_chars, s.ingest.chunk_overlap_chars, s.ingest.min_chunk_chars)
    defaults = IngestSettings()
    if chunking != (defaults.chunk_chars, defaults.chunk_overlap_chars, defaults.min_chunk_chars):
        variant += "-chunk{}-{}-{}".format(*chunking)
    cfg = EvalConfig(work_dir=s.storage.data_dir / "eval" / f"{work_name}-{embedder}{variant}",
                     cache_path=s.storage.data_dir / "cache" / "embeddings.sqlite3",
                     modes=tuple(mode), embedder=embedder, personas=personas, retrieval=retrieval,  # type: ignore[arg-type]
                     known_items=known_items, identifiers=identifiers, ingest=s.ingest,
                     progress=lambda msg: typer.echo(f"[{ds.name}] {msg}", err=True))
    try:
        result = run_eval(ds, cfg)
    except ClearanceError as exc:
        _fail(exc)
    paths = reports.write(result, out or DEFAULT_OUT)
    head = reports.headline(result)
    for m, v in head["modes"].items():
        typer.echo(f"{ds.name} {m:7s} " + "  ".join(f"{k} {x:.4f}" for k, x in v.items()))
    if "entitlements" in result:
        e = result["entitlements"]
        typer.echo(f"{ds.name} leaks {e['leaks']} in {e['checks']} returned chunks checked")
    if "known_item" in result:
        ki = result["known_item"]
        typer.echo(f"{ds.name} known-item MRR@10 " + "  ".join(f"{m} {_num(v['mrr@10'])}" for m, v in ki["modes"].items())
                   + f" ({'same' if ki['orders_agree'] else 'different'} mode order as nDCG@10)")
    typer.echo(f"report: {paths['md']}")
    problems = reports.check(result, {"modes": {}}, 0.0)
    if problems:
        typer.echo("FAILED: " + "; ".join(problems), err=True)
        raise typer.Exit(1)


def _eval_live(s: Settings, personas_file: Path, queries: Path | None, baseline: Path | None, mode: str,
               seed: int, max_docs_per_persona: int | None, rbo_min: float, tolerance: float, out: Path,
               qrels: Path | None = None) -> None:
    from app.services import build_services
    from eval import report as reports
    from eval.gate import live_gate
    from eval.html import write_live
    from eval.judging import read_qrels
    from eval.live import LiveConfig, load_personas, load_queries, run_live

    try:
        if qrels is not None and queries is None:
            raise ClearanceError("--qrels judges the queries of --queries: pass both", code="usage")
        cfg = LiveConfig(load_personas(personas_file), mode=mode, seed=seed,  # type: ignore[arg-type]
                         max_docs_per_persona=max_docs_per_persona,
                         external=load_queries(queries) if queries else [],
                         qrels=read_qrels(qrels) if qrels else None,
                         progress=lambda msg: typer.echo(f"[live] {msg}", err=True))
        base = reports.load(baseline) if baseline else None
        services = build_services(s)
    except ClearanceError as exc:
        _fail(exc)
    try:
        result = run_live(services, cfg)
    except ClearanceError as exc:
        _fail(exc)
    finally:
        services.close()
    gate = live_gate(result, base, tolerance=tolerance, rbo_min=rbo_min)
    if gate.stability is not None:
        result["stability"] = gate.stability
    paths = write_live(result, out, gate={"passed": gate.passed, "refusals": gate.refusals, "problems": gate.problems,
                                          "notes": gate.notes} if base is not None else None)
    lc = result["leak_checks"]
    typer.echo(f"leaks {lc['leaks']} in {lc['checked_chunks']} returned chunks checked against the catalog's ACLs")
    for name, p in result["personas"].items():
        ki = p["known_item"]
        typer.echo(f"{name:12s} queries {p['queries']:4d}  known-item MRR@10 {_num(ki['mrr@10'])}  "
                   f"success@1 {_num(ki['success@1'])}  success@10 {_num(ki['success@10'])}  "
                   f"zero-result {_num(p['zero_result_rate'])}  low-confidence {_num(p['low_confidence_rate'])}")
        if "labelled" in p:
            lab = p["labelled"]
            typer.echo(f"{'':12s} judged queries {lab['queries']}  nDCG@10 {_num(lab['ndcg@10'])}  "
                       f"judged@10 {_num(lab['judged@10'])}")
    if gate.stability is not None:
        typer.echo(f"RBO@10 against the baseline {_num(gate.stability['rbo_mean'])}")
    typer.echo(f"report: {paths['html']} and {paths['json']}")
    _gate_exit(gate.refusals, gate.problems, gate.notes)


def _ranking_overrides(r: RetrievalSettings, fusion: str | None, rrf_k: int | None) -> RetrievalSettings:
    """The retrieval settings with eval's --fusion/--rrf-k applied, validated like the settings."""
    update: dict[str, Any] = {}
    if fusion is not None:
        update["fusion"] = fusion
    if rrf_k is not None:
        if update.get("fusion", r.fusion) != "rrf":
            _fail(ClearanceError("--rrf-k applies to RRF fusion: add --fusion rrf", code="usage"))
        update["rrf_k"] = rrf_k
    try:
        return RetrievalSettings.model_validate({**r.model_dump(), **update})
    except ValidationError as exc:
        _fail(ClearanceError("; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}"
                                       for e in exc.errors()), code="usage"))


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _gate_exit(refused: list[str], problems: list[str], notes: list[str]) -> None:
    for n in notes:
        typer.echo(f"note: {n}", err=True)
    for r in refused:
        typer.echo(f"refused: {r}", err=True)
    for p in problems:
        typer.echo(f"regression: {p}", err=True)
    if refused or problems:
        raise typer.Exit(1)


@eval_app.command("sample")
def eval_sample(
    ctx: typer.Context,
    from_audit: bool = typer.Option(False, "--from-audit", help="sample the audit trail's searches (needs "
                                    "audit.store_raw_query on while they were made)"),
    since: str = typer.Option(..., help="ISO date/datetime, or a look-back: 7d, 12h, 30m"),
    n: int = typer.Option(200, "--n", help="queries to keep"),
    out: Path = typer.Option(Path("var/eval/queries.jsonl"), help="query-set JSONL to write"),
    seed: int = typer.Option(13),
    pii_pattern: list[str] = typer.Option([], help="extra NAME=REGEX to scrub (repeat); applied after the defaults"),
) -> None:
    """Write a query set from production searches: deduplicated, stratified by principal set and
    by source hit, PII-scrubbed. Reads the catalog only, so it runs beside a serving server."""
    from eval.sample import compile_patterns, parse_since, sample_queries, write_jsonl
    from store.audit import AuditLog
    from store.catalog import Catalog

    if not from_audit:
        _fail(ClearanceError("only --from-audit is supported as a query source", code="usage"))
    s = _settings(ctx)
    try:
        patterns = compile_patterns(pii_pattern)
        start = parse_since(since)
        catalog = Catalog(s.catalog_url(), auto_migrate=s.auto_migrate())
    except ClearanceError as exc:
        _fail(exc)
    try:
        rows, stats = sample_queries(AuditLog(s.audit, catalog, prune_on_start=False).export(since=start), n,
                                     seed=seed, patterns=patterns)
    except ClearanceError as exc:
        _fail(exc)
    finally:
        catalog.close()
    if stats["searches"] and stats["without_text"] == stats["searches"]:
        _fail(ClearanceError(f"{stats['searches']} searches since {start.isoformat()} but none with raw query text: "
                             "turn on audit.store_raw_query (CLEARANCE_AUDIT__STORE_RAW_QUERY=true) to capture it",
                             code="no_query_text"))
    write_jsonl(rows, out)
    typer.echo(f"{len(rows)} queries written to {out} ({stats['searches']} searches read, {stats['unique']} unique "
               f"after scrubbing, {stats['without_text']} without raw text)")


@eval_app.command("personas")
def eval_personas(
    ctx: typer.Context,
    from_audit: bool = typer.Option(False, "--from-audit", help="read who searched from the audit trail"),
    since: str = typer.Option(..., help="ISO date/datetime, or a look-back: 7d, 12h, 30m"),
    personas_file: Path | None = typer.Option(None, "--personas", exists=True, dir_okay=False,
                                              help="personas to match against the principal sets that searched"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The principal sets that actually searched (hashed in the audit trail), matched against a
    personas file: which personas stand for real traffic, which searchers no persona covers."""
    from eval.live import load_personas
    from eval.sample import parse_since, searchers
    from store.audit import AuditLog
    from store.catalog import Catalog

    if not from_audit:
        _fail(ClearanceError("only --from-audit is supported as a source of identities", code="usage"))
    s = _settings(ctx)
    try:
        people = load_personas(personas_file) if personas_file else []
        start = parse_since(since)
        catalog = Catalog(s.catalog_url(), auto_migrate=s.auto_migrate())
    except ClearanceError as exc:
        _fail(exc)
    try:
        found = searchers(AuditLog(s.audit, catalog, prune_on_start=False).export(since=start), people, s.ingest.tenant)
    except ClearanceError as exc:
        _fail(exc)
    finally:
        catalog.close()
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    for e in found["principal_sets"]:
        typer.echo(f"{e['principals_hash'][:12]}  searches {e['searches']:6d}  persona {e['persona'] or '-':12s}  "
                   f"subjects {', '.join(e['subjects'])}")
    typer.echo(f"{found['covered_searches']} of {found['searches']} searches come from a persona's principal set; "
               f"personas without a search: {', '.join(found['personas_without_searches']) or 'none'}")


@eval_app.command("pool")
def eval_pool(
    ctx: typer.Context,
    personas_file: Path = typer.Option(..., "--personas", exists=True, dir_okay=False, help="principal sets (YAML or JSON)"),
    queries: Path = typer.Option(..., exists=True, dir_okay=False, help="query-set JSONL (`eval sample`)"),
    k: int = typer.Option(10, help="documents per answer pooled"),
    mode: list[str] = typer.Option(["bm25", "dense", "hybrid"], help="modes pooled; repeat"),
    out: Path = typer.Option(Path("var/eval/pool"), help="sheet path without suffix: .csv and .jsonl are written"),
) -> None:
    """Export the union of top-k over modes and personas as a judging sheet (text and citation)."""
    from app.services import build_services
    from eval.judging import pool, write_sheet
    from eval.live import load_personas, load_queries

    s = _settings(ctx)
    try:
        people, qs = load_personas(personas_file), load_queries(queries)
        services = build_services(s)
    except ClearanceError as exc:
        _fail(exc)
    try:
        rows = pool(services, qs, people, k=k, modes=tuple(mode))  # type: ignore[arg-type]
    except ClearanceError as exc:
        _fail(exc)
    finally:
        services.close()
    paths = write_sheet(rows, out)
    typer.echo(f"{len(rows)} (query, document) pairs from {len(qs)} queries: {paths['csv']} and {paths['jsonl']}; "
               "fill in `grade` (0 = not relevant, blank = unjudged), then `clearance eval judge import`")


judge_app = typer.Typer(no_args_is_help=True, help="Judging sheets: grades back into qrels.")
eval_app.add_typer(judge_app, name="judge")


@judge_app.command("import")
def eval_judge_import(
    ctx: typer.Context,
    sheet: Path = typer.Argument(..., exists=True, dir_okay=False, help="graded sheet (.csv or .jsonl)"),
    out: Path = typer.Option(Path("var/eval/qrels.tsv"), help="qrels TSV to write"),
) -> None:
    """Read grades into a qrels file; documents the catalog does not hold are an error."""
    from eval.judging import import_grades, write_qrels
    from store.catalog import Catalog

    s = _settings(ctx)
    try:
        catalog = Catalog(s.catalog_url(), auto_migrate=s.auto_migrate())
    except ClearanceError as exc:
        _fail(exc)
    try:
        known = {r.key for r in catalog.documents(tenant=s.ingest.tenant)}
        qrels = import_grades(sheet, known)
    except ClearanceError as exc:
        _fail(exc)
    finally:
        catalog.close()
    write_qrels(qrels, out)
    graded = sum(len(v) for v in qrels.values())
    relevant = sum(1 for v in qrels.values() for g in v.values() if g > 0)
    typer.echo(f"{graded} grades ({relevant} relevant) for {len(qrels)} queries written to {out}")


@eval_app.command("check")
def eval_check(
    report: Path = typer.Option(..., exists=True, dir_okay=False),
    baseline: Path = typer.Option(..., exists=True, dir_okay=False),
    tolerance: float = typer.Option(0.01, help="allowed drop per metric (and the stale-baseline margin)"),
    rbo_min: float = typer.Option(0.95, help="live reports: minimum mean RBO@10 against the baseline"),
    max_zero_result_rate: float | None = typer.Option(None, help="live reports: absolute zero-result ceiling"),
) -> None:
    """Exit non-zero when a report regresses against a baseline, or cannot be compared with it
    (another dataset or query set, other counts, leak checks skipped). For CI."""
    from eval import report as reports
    from eval.gate import live_gate, refusals

    cur, base = reports.load(report), reports.load(baseline)
    if cur.get("kind") == "live" or base.get("kind") == "live":
        gate = live_gate(cur, base, tolerance=tolerance, rbo_min=rbo_min, max_zero_result_rate=max_zero_result_rate)
        if gate.stability is not None:
            typer.echo(f"RBO@10 {_num(gate.stability['rbo_mean'])}, Jaccard@10 {_num(gate.stability['jaccard_mean'])} "
                       f"over {gate.stability['queries']} queries")
        _gate_exit(gate.refusals, gate.problems, gate.notes)
    else:
        refused = refusals(reports.headline(cur) if "ingest" in cur else cur,
                           reports.headline(base) if "ingest" in base else base)
        problems = [] if refused else reports.check(cur, base, tolerance)
        _gate_exit(refused, problems, [] if refused else reports.stale_notes(cur, base, tolerance))
    typer.echo("no regression")


cli_ops.register(app)  # status, jobs, audit
cli_sources.register(app)  # sources [add|show|update|delete]
cli_maintenance.register(app)  # db upgrade|status, reindex, backup, restore
cli_connectors.register(app)  # sync SOURCE [--permissions]


def run() -> None:
    try:
        app()
    except ClearanceError as exc:  # pragma: no cover - last resort for errors raised outside commands
        for line in exc.message.splitlines() or [""]:
            typer.echo(f"error [{exc.code}]: {line}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # ``python -m cli.main`` (the tests' subprocesses)
    run()
