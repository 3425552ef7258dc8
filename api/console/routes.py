"""The console's pages (see ``api.console`` for the invariants). Handlers stay short: read the
form, call one app-layer service with the signed-in user's entitlements, render a template."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from fastapi import APIRouter, BackgroundTasks, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import FormData

from api.console import oidc
from api.console import session as sess
from api.console.render import markdown, marked
from app.services import Services
from auth.authenticator import ADMIN, SEARCH, Authenticator
from core.errors import ClearanceError, InvalidRequestError, NotFoundError, PermissionDeniedError
from core.logging import Log
from core.types import Entitlements, Scope, SearchMode

log = Log("clearance.console")

# Demo identities for dev mode (demo/README.md), plus an operator to try the admin pages.
PERSONAS: dict[str, dict[str, list[str]]] = {
    "alice": {"groups": ["finance"], "scopes": ["clearance:search"]},
    "bob": {"groups": ["hr"], "scopes": ["clearance:search"]},
    "carol": {"groups": ["engineering"], "scopes": ["clearance:search"]},
    "dave": {"groups": ["legal", "exec"], "scopes": ["clearance:search"]},
    "erin": {"groups": [], "scopes": ["clearance:search"]},
    "ops": {"groups": [], "scopes": ["clearance:admin"]},
}
MODES = ("hybrid", "dense", "bm25")
REPORT_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.(png|json|md)$")
REPORT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

env = Environment(loader=PackageLoader("api.console", "templates"), autoescape=select_autoescape(default=True),
                  trim_blocks=True, lstrip_blocks=True)
env.filters["marked"] = marked


def when(value: object) -> str:
    """An ISO timestamp, shorter: ``2026-12-04 16:49:35Z`` (UTC)."""
    if isinstance(value, datetime):
        value = value.isoformat()
    if not isinstance(value, str) or not value:
        return "–"
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return value
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M:%SZ")


env.filters["when"] = when


def num(value: float) -> str:
    """A metric: whole numbers as they are, the rest to four decimals."""
    return f"{int(value)}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.4f}"


env.filters["num"] = num


class SignInNeeded(Exception):
    pass


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def _public_url(request: Request) -> str:
    return _services(request).settings.console.public_url


SECURITY_HEADERS = {
    # No script anywhere in the console; styles and images from the console itself only.
    "content-security-policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


class ConsoleRoute(APIRoute):
    """Renders refusals as pages (with the stable code and the status), sends the visitor to the
    sign-in page when the session holds no valid token, saves a changed session cookie and adds
    the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInNeeded:
                response = RedirectResponse("/console/signin", status_code=303)
            except ClearanceError as exc:
                response = await _error_page(request, exc)
            session = getattr(request.state, "console_session", None)
            if getattr(request.state, "console_signed_out", False):
                sess.clear(request, response, public_url=_public_url(request))
            elif isinstance(session, sess.Session) and session.dirty:
                sess.save(request, response, session, public_url=_public_url(request))
            for k, v in SECURITY_HEADERS.items():
                response.headers.setdefault(k, v)
            return response

        return run


router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


# ------------------------------------------------------------------------------------ helpers

async def _user(request: Request) -> Entitlements | None:
    """The signed-in user, from the session's token through the API's own authenticator."""
    if hasattr(request.state, "console_user"):
        return request.state.console_user  # type: ignore[no-any-return]
    session = sess.load(request)
    user = None
    if session.token:
        try:
            user = await run_in_threadpool(_services(request).auth.authenticate, f"Bearer {session.token}")
        except ClearanceError as exc:
            if exc.status != 401:
                raise
            session.token, session.dirty = None, True  # expired or no longer trusted: signed out
    request.state.console_user = user
    return user


async def _signed_in(request: Request) -> Entitlements:
    user = await _user(request)
    if user is None:
        raise SignInNeeded()
    return user


async def _searcher(request: Request) -> Entitlements:
    """The signed-in user, holding ``clearance:search`` like an API caller of the read routes."""
    user = await _signed_in(request)
    Authenticator.require(user, SEARCH)
    return user


def _is_admin(user: Entitlements | None, services: Services) -> bool:
    if user is None or user.tenant != services.settings.ingest.tenant:
        return False
    try:
        Authenticator.require(user, ADMIN)
    except PermissionDeniedError:
        return False
    return True


async def _admin(request: Request) -> Entitlements:
    """The signed-in admin of this deployment's tenant, else 403 (the services check again)."""
    user = await _signed_in(request)
    services = _services(request)
    Authenticator.require(user, ADMIN)
    if user.tenant != services.settings.ingest.tenant:
        raise PermissionDeniedError("this deployment administers another tenant", code="wrong_tenant")
    return user


async def _form(request: Request) -> FormData:
    """The posted form, after the CSRF check (403 ``csrf_failed`` before anything else runs)."""
    form = await request.form()
    if not sess.csrf_ok(sess.load(request), form.get("csrf")):
        raise PermissionDeniedError("the form's CSRF token is missing or does not belong to this session: "
                                    "reload the page and submit again", code="csrf_failed")
    return form


async def _page(request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    services = _services(request)
    try:
        user = await _user(request)
    except ClearanceError:
        user = None
    session = sess.load(request)
    html = env.get_template(template).render(
        user=user, admin=_is_admin(user, services), dev_mode=services.settings.auth.mode == "dev",
        signed_in_dev=session.dev, csrf=session.csrf, path=request.url.path, **ctx)
    return HTMLResponse(html, status_code=status)


async def _error_page(request: Request, exc: ClearanceError) -> Response:
    return await _page(request, "error.html", status=exc.status, code=exc.code, message=str(exc), status_code=exc.status)


def _text(form: FormData, name: str, max_len: int = 4000) -> str:
    value = form.get(name)
    text = value.strip() if isinstance(value, str) else ""
    if len(text) > max_len:
        raise InvalidRequestError(f"{name}: at most {max_len} characters")
    return text


def _names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(names) > 50:
        raise InvalidRequestError(f"{what}: at most 50")
    return names


def _date(text: str, name: str, *, end_of_day: bool = False) -> datetime | None:
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidRequestError(f"{name}: a date as YYYY-MM-DD") from None
    return day + timedelta(days=1) if end_of_day else day


class SearchForm:
    """The search form's fields, validated (shared by search and view-as)."""

    def __init__(self, form: FormData) -> None:
        self.q = _text(form, "q")
        if not self.q:
            raise InvalidRequestError("q: type what to search for")
        mode = _text(form, "mode") or "hybrid"
        if mode not in MODES:
            raise InvalidRequestError(f"mode: one of {', '.join(MODES)}")
        self.mode = cast(SearchMode, mode)
        self.sources = _text(form, "sources", 1000)
        self.after = _text(form, "after", 10)
        self.before = _text(form, "before", 10)
        self.max_age_days = _text(form, "max_age_days", 10)
        self.explain = form.get("explain") == "on"
        self.top_k = 10

    def scope(self, ent: Entitlements) -> Scope:
        max_age_s = None
        if self.max_age_days:
            try:
                days = float(self.max_age_days)
            except ValueError:
                raise InvalidRequestError("max_age_days: a number of days") from None
            if not 0 < days <= 36500:
                raise InvalidRequestError("max_age_days: more than 0, at most 36500")
            max_age_s = max(1, int(days * 86400))
        sources = _names(self.sources, "sources")
        return Scope(entitlements=ent, max_age_s=max_age_s, sources=frozenset(sources) if sources else None,
                     modified_after=_date(self.after, "after"),
                     modified_before=_date(self.before, "before", end_of_day=True))

    def params(self, scope: Scope) -> dict[str, Any]:
        def iso(d: datetime | None) -> str | None:
            return d.isoformat() if d else None

        return {"max_age": scope.max_age_s, "sources": sorted(scope.sources) if scope.sources else None,
                "modified_after": iso(scope.modified_after), "modified_before": iso(scope.modified_before),
                "explain": self.explain, "via": "console"}


def _results(out: Any) -> dict[str, Any]:
    res = out.result
    groups = []
    for g in res.documents or []:
        first = g.hits[0].provenance
        groups.append({"source": g.source, "doc_id": g.doc_id, "score": g.score, "title": first.get("title") or g.doc_id,
                       "uri": first.get("uri") or "", "hits": g.hits})
    return {"groups": groups, "mode": res.mode, "took_ms": res.took_ms, "low_confidence": res.low_confidence,
            "degraded": res.degraded, "warnings": res.warnings, "stale": out.stale}


# ------------------------------------------------------------------------------------ sign-in

@router.get("")
async def home(request: Request) -> Response:
    user = await _user(request)
    return RedirectResponse("/console/search" if user else "/console/signin", status_code=303)


@router.get("/signin")
async def signin_page(request: Request) -> Response:
    services = _services(request)
    issuer = ""
    if services.settings.auth.mode != "dev":
        try:
            issuer = oidc.issuer_of(services.settings)
        except ClearanceError:
            issuer = ""
    return await _page(request, "signin.html", personas=PERSONAS, issuer=issuer)


@router.post("/signin/dev")
async def signin_dev(request: Request) -> Response:
    form = await _form(request)
    services = _services(request)
    if services.settings.auth.mode != "dev" or services.auth.dev is None:
        raise PermissionDeniedError("demo identities exist in dev mode only", code="not_dev_mode")
    name = _text(form, "persona")
    persona = PERSONAS.get(name)
    if persona is None:
        raise InvalidRequestError(f"persona: one of {', '.join(PERSONAS)}")
    token = services.auth.dev.mint(name, groups=persona["groups"], scopes=persona["scopes"])
    await run_in_threadpool(services.auth.authenticate, f"Bearer {token}")  # the API's own check
    _signed_in_as(request, token, dev=True)
    return RedirectResponse("/console/search", status_code=303)


def _signed_in_as(request: Request, token: str, *, dev: bool) -> None:
    ttl = _services(request).settings.console.session_ttl_s
    session = sess.Session(token=token, dev=dev, exp=int(time.time()) + ttl, dirty=True)  # new CSRF token
    request.state.console_session = session
    if hasattr(request.state, "console_user"):
        del request.state.console_user


@router.get("/signin/oidc")
async def signin_oidc(request: Request) -> Response:
    """Starts the authorization code flow (a link, not a form: the redirect leaves the site)."""
    services = _services(request)
    if services.settings.auth.mode != "oidc":
        raise InvalidRequestError("sign-in with an identity provider needs auth.mode=oidc", code="not_oidc_mode")
    base = services.settings.console.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    url, login = await oidc.start(services.settings, f"{base}/console/callback")
    session = sess.load(request)
    session.login, session.dirty = login, True
    return RedirectResponse(url, status_code=303)


@router.get("/callback")
async def callback(request: Request) -> Response:
    services = _services(request)
    session = sess.load(request)
    if request.query_params.get("error"):
        raise PermissionDeniedError(f"the identity provider refused: {request.query_params.get('error')}",
                                    code="signin_refused")
    token = await oidc.finish(services.settings, session.login, request.query_params.get("code"),
                              request.query_params.get("state"))
    await run_in_threadpool(services.auth.authenticate, f"Bearer {token}")  # 401 page when the API would refuse it
    _signed_in_as(request, token, dev=False)
    return RedirectResponse("/console/search", status_code=303)


@router.post("/signout")
async def signout(request: Request) -> Response:
    await _form(request)
    request.state.console_signed_out = True
    return RedirectResponse("/console/signin", status_code=303)


# ------------------------------------------------------------------------------------ search

@router.get("/search")
async def search_page(request: Request) -> Response:
    await _signed_in(request)
    return await _page(request, "search.html", form=None, results=None, view_as=None, action="/console/search")


@router.post("/search")
async def search(request: Request) -> Response:
    form = await _form(request)
    user = await _searcher(request)
    f = SearchForm(form)
    scope = f.scope(user)
    out = await run_in_threadpool(lambda: _services(request).reads.search(
        scope, f.q, top_k=f.top_k, mode=f.mode, explain=f.explain, params=f.params(scope), group_by="document",
        chunks_per_document=3))
    return await _page(request, "search.html", form=f, results=_results(out), view_as=None, action="/console/search")


@router.get("/view-as")
async def view_as_page(request: Request) -> Response:
    await _admin(request)
    return await _page(request, "search.html", form=None, results=None, view_as={}, action="/console/view-as",
                       personas=PERSONAS)


@router.post("/view-as")
async def view_as(request: Request) -> Response:
    form = await _form(request)
    admin = await _admin(request)
    services = _services(request)
    persona = _text(form, "persona", 100)
    if persona:
        if services.settings.auth.mode != "dev" or persona not in PERSONAS:
            raise InvalidRequestError("persona: a demo identity (dev mode only)")
        who, groups = persona, PERSONAS[persona]["groups"]
    else:
        who, groups = _text(form, "as_user", 300), _names(_text(form, "as_groups", 2000), "groups")
    principals = {f"tenant:{admin.tenant}"} | {f"group:{g}" for g in groups}
    if who:
        principals.add(who if who.startswith("user:") else f"user:{who}")
    try:
        # Not a caller's identity (only the resolver makes those): the principal set the admin
        # views as, in the admin's tenant; reads.search_as audits it under the admin's name.
        viewed = Entitlements(subject=who or "(groups only)", issuer="console:view-as", tenant=admin.tenant,
                              principals=frozenset(principals))
    except ValueError as exc:
        raise InvalidRequestError(f"view as: {exc}") from None
    f = SearchForm(form)
    scope = f.scope(viewed)
    out = await run_in_threadpool(lambda: services.reads.search_as(
        admin, scope, f.q, top_k=f.top_k, mode=f.mode, explain=f.explain, params=f.params(scope),
        group_by="document", chunks_per_document=3))
    info = {"subject": who, "groups": groups, "persona": persona, "principals": sorted(principals)}
    return await _page(request, "search.html", form=f, results=_results(out), view_as=info,
                       action="/console/view-as", personas=PERSONAS)


# ------------------------------------------------------------------------------------ documents

@router.get("/documents/{source}/{doc_id:path}")
async def document(request: Request, source: str, doc_id: str) -> Response:
    user = await _searcher(request)
    services = _services(request)
    admin = _is_admin(user, services)
    body: dict[str, Any] | None = None
    stale: list[Any] = []
    try:
        body, stale = await run_in_threadpool(services.reads.document, Scope(entitlements=user), source, doc_id)
    except NotFoundError:
        if not admin:
            raise
    ops: dict[str, Any] | None = None
    if admin:
        row = next((d for d in await run_in_threadpool(services.admin.documents, user, source, None)
                    if d["doc_id"] == doc_id), None)
        if body is None and row is None:
            raise NotFoundError("document not found")
        history = await run_in_threadpool(services.admin.acl_history, user, source, doc_id)
        readers = await run_in_threadpool(services.admin.who_saw, user, source, doc_id, None, 20)
        ops = {"row": row, "history": [h.as_dict() for h in history], "readers": readers.reads}
    return await _page(request, "document.html", source=source, doc_id=doc_id, body=body, stale=stale, ops=ops)


# ------------------------------------------------------------------------------------ operations

@router.get("/sources")
async def sources(request: Request) -> Response:
    user = await _admin(request)
    rows = await run_in_threadpool(_services(request).admin.sources, user)
    return await _page(request, "sources.html", sources=rows, started=request.query_params.get("started"))


@router.post("/sources/{name}/resync")
async def resync(request: Request, name: str, background: BackgroundTasks) -> Response:
    await _form(request)
    user = await _admin(request)
    services = _services(request)
    # The refusals (scope, tenant, writers, kind) are checked and audited now; the sync itself
    # runs after the response, so the jobs page shows its progress.
    row = await run_in_threadpool(services.writes.authorize, user, "resync", name)
    if row.kind != "filesystem":
        raise InvalidRequestError(f"source {name!r} is a {row.kind} source: it cannot be resynced", code="not_resyncable")

    def run() -> None:
        try:
            services.writes.resync(user, name)
        except ClearanceError as exc:  # audited by the write service; the jobs page shows the job
            log.warning("console.resync_failed", source=name, code=exc.code)

    background.add_task(run_in_threadpool, run)
    return RedirectResponse(f"/console/jobs?source={name}", status_code=303)


@router.get("/jobs")
async def jobs(request: Request) -> Response:
    user = await _admin(request)
    source = request.query_params.get("source") or None
    rows = await run_in_threadpool(_services(request).admin.jobs, user, source, 50)
    running = any(j["state"] == "running" for j in rows) or (source is not None and not rows)
    return await _page(request, "jobs.html", jobs=rows, source=source, refresh=running)


# ------------------------------------------------------------------------------------ evaluation

def _reports_dir(request: Request) -> Path:
    return _services(request).settings.console.reports_dir.resolve()


def _report_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted({p.stem for p in folder.iterdir() if p.suffix in (".json", ".md") and REPORT_NAME.match(p.stem)})


def _load_report(folder: Path, name: str) -> tuple[dict[str, Any] | None, str | None]:
    if not REPORT_NAME.match(name):
        raise NotFoundError("no such report")
    j, m = folder / f"{name}.json", folder / f"{name}.md"
    data = None
    if j.is_file():
        try:
            data = json.loads(j.read_text("utf-8"))
        except ValueError:
            data = None
    md = m.read_text("utf-8") if m.is_file() else None
    if data is None and md is None:
        raise NotFoundError("no such report")
    return data if isinstance(data, dict) else None, md


def _metrics(data: dict[str, Any] | None, prefix: str = "") -> dict[str, float]:
    """Numeric leaves by dotted path, leaving out per-query and per-persona detail."""
    out: dict[str, float] = {}
    for k, v in (data or {}).items():
        if k in ("per_query", "personas", "significance"):
            continue
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_metrics(v, path + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[path] = float(v)
    return out


@router.get("/evals")
async def evals(request: Request) -> Response:
    await _signed_in(request)
    folder = _reports_dir(request)
    return await _page(request, "evals.html", names=_report_names(folder), folder=str(folder))


@router.get("/evals/compare")
async def compare(request: Request) -> Response:
    await _signed_in(request)
    folder = _reports_dir(request)
    a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
    da, _ = _load_report(folder, a)
    db, _ = _load_report(folder, b)
    ma, mb = _metrics(da), _metrics(db)
    keys = sorted(set(ma) & set(mb), key=lambda k: (not k.startswith("modes."), k))  # quality metrics first
    rows = [{"metric": k, "a": ma[k], "b": mb[k], "delta": mb[k] - ma[k]} for k in keys]
    return await _page(request, "compare.html", a=a, b=b, rows=rows, names=_report_names(folder))


@router.get("/evals/files/{name}")
async def report_file(request: Request, name: str) -> Response:
    await _signed_in(request)
    folder = _reports_dir(request)
    path = (folder / name).resolve()
    if not REPORT_FILE.match(name) or path.parent != folder or not path.is_file():
        raise NotFoundError("no such file")
    media = {".png": "image/png", ".json": "application/json", ".md": "text/markdown; charset=utf-8"}[path.suffix]
    return FileResponse(path, media_type=media)


@router.get("/evals/{name}")
async def report(request: Request, name: str) -> Response:
    await _signed_in(request)
    folder = _reports_dir(request)
    data, md = _load_report(folder, name)
    html = markdown(md, lambda f: f"/console/evals/files/{f}") if md else None
    plots = sorted(p.name for p in folder.glob(f"{name}-*.png")) if not md else []
    return await _page(request, "report.html", name=name, html=html, metrics=_metrics(data), plots=plots,
                       names=_report_names(folder), has_json=data is not None)


# ------------------------------------------------------------------------------------ assets

STATIC = Path(__file__).resolve().parent / "static"


@router.get("/static/console.css")
async def css() -> Response:
    return FileResponse(STATIC / "console.css", media_type="text/css", headers={"cache-control": "max-age=300"})
