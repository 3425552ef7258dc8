"""API fuzzing with schemathesis against the app's own OpenAPI schema, over real HTTP.

``python -m battery.fuzz [--examples N] [--seed S]``

The real app (Qdrant Edge on disk, SQLite catalog, the hash embedder, the demo corpus
ingested) runs behind uvicorn on a loopback port. The schema is loaded from the server's own
``/openapi.json`` and every operation in it is fuzzed as three callers:

- ``search``: alice, group ``finance``, scope ``clearance:search`` (ingest and admin routes
  answer 403 to her);
- ``admin``: dave, groups ``legal`` and ``exec``, scope ``clearance:admin`` (implies ingest and
  search, so the push, ingest-job and admin routes really run);
- ``anonymous``: no valid token: none at all, or the random one schemathesis generates from the
  ``bearerAuth`` scheme the schema declares.

Each operation gets up to ``N`` schema-conforming (positive) and ``N`` schema-violating
(negative) cases per caller, then the fixed :data:`EDGE_CASES`. Every response goes through
schemathesis' own checks (:data:`CHECKS`): no 5xx, the status code is documented, so is the
content type, the documented headers are there (``WWW-Authenticate`` on 401, ``Retry-After`` on
503) and the body matches the documented schema (error bodies included). With a token,
``ignored_auth`` also replays each 2xx without the token and with an invalid one (both must be
refused). Without one, a protected operation must answer 401 with a ``Bearer`` challenge
whatever the input (:func:`challenge_check`; a request no route matches is a 404 and counted
apart).

Separately, every route the app serves (from its router, hidden ones included, not only the
schema) is probed without a token and with malformed credentials: everything outside
:data:`PUBLIC_BY_DESIGN` must answer 401 with ``WWW-Authenticate``.

``POST /v1/ingest/jobs`` syncs a directory on the server: the fuzzer keeps the generated
``path`` but confines it to a sandbox folder (:func:`confine_ingest_path`), so a generated
``/`` or ``.`` never walks the real filesystem.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402
import requests  # noqa: E402
import schemathesis  # noqa: E402
from hypothesis import HealthCheck, Phase, given  # noqa: E402
from hypothesis import seed as hyp_seed
from hypothesis import settings as hyp_settings
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from battery.result import exit_code, write_result  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "demo"

# Routes that answer without a token on purpose: probes and the scraper carry none (api/routes/
# health.py), the API description and its viewers, and the dev issuer's own public keys (only
# served in dev mode, 404 otherwise).
PUBLIC_BY_DESIGN: frozenset[tuple[str, str]] = frozenset({
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
    ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc"),
    ("GET", "/dev-issuer/jwks.json"), ("GET", "/dev-issuer/.well-known/openid-configuration"),
    # RFC 9728 metadata of the MCP endpoint (api/mcp.py): what a client reads to find the IdP.
    ("GET", "/.well-known/oauth-protected-resource"), ("GET", "/.well-known/oauth-protected-resource/mcp"),
})


# The web console (api/console) signs people in with a session cookie, not a bearer token: without
# a session its pages send the browser to the sign-in page (303), every POST is refused for its
# missing CSRF token (403), and only these answer by themselves (they hold nothing).
CONSOLE = "/console"
CONSOLE_PUBLIC: frozenset[tuple[str, str]] = frozenset({
    ("GET", "/console/signin"), ("GET", "/console/signin/oidc"), ("GET", "/console/callback"),
    ("GET", "/console/static/console.css"),
})


def _probe_console(http: httpx.Client, routes: list[tuple[str, str]], failed: list[str]) -> None:
    for method, path in routes:
        r = http.request(method, _fill(path), headers={"authorization": "Bearer not-a-jwt"}, follow_redirects=False)
        if method == "POST":
            ok = r.status_code == 403 and "csrf_failed" in r.text
        elif (method, path) in CONSOLE_PUBLIC:
            ok = r.status_code < 500
        else:
            ok = r.status_code == 303 and r.headers.get("location") == "/console/signin"
        if not ok:
            failed.append(f"{method} {path} (console, no session): {r.status_code} location={r.headers.get('location')!r}")


def challenge_check(routable: Callable[[str, str], bool], unroutable: Counter[str]) -> Callable[..., None]:
    """The check for anonymous calls: a protected operation answers 401 with a Bearer challenge,
    whatever the input. A request the router cannot route at all (a generated path parameter
    the route's pattern does not match) never reaches a protected route: it must be a 404."""

    def challenged_without_token(ctx: Any, response: Any, case: Any) -> bool | None:
        if (case.method.upper(), case.path) in PUBLIC_BY_DESIGN:
            return None
        path = unquote(urlsplit(str(response.request.url)).path)
        if not routable(case.method.upper(), path):
            assert response.status_code == 404, f"unroutable request answered {response.status_code}, not 404"
            unroutable[case.operation.label] += 1
            return None
        challenge = response.headers.get("www-authenticate")
        if isinstance(challenge, list):
            challenge = challenge[0] if challenge else None
        assert response.status_code == 401, f"expected 401 without a token, got {response.status_code}"
        assert challenge and str(challenge).startswith("Bearer "), "401 without a Bearer WWW-Authenticate challenge"
        return None

    return challenged_without_token


CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@dataclass(frozen=True)
class Identity:
    name: str
    sub: str | None
    groups: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()

    @property
    def anonymous(self) -> bool:
        return self.sub is None


IDENTITIES = (
    Identity("search", "alice", ("finance",), ("clearance:search",)),
    Identity("admin", "dave", ("legal", "exec"), ("clearance:admin",)),
    Identity("anonymous", None),
)


@dataclass
class IdentityReport:
    examples: Counter[str] = field(default_factory=Counter)          # positive / negative
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)          # per check
    transport_errors: int = 0
    generated_credentials: int = 0
    unroutable: Counter[str] = field(default_factory=Counter)        # anonymous requests no route matches (404)
    refusals: Counter[str] = field(default_factory=Counter)          # 403s by error code
    violations: list[str] = field(default_factory=list)
    no_cases: list[str] = field(default_factory=list)                 # operation (mode) with nothing to generate

    def figures(self) -> dict[str, Any]:
        return {"examples": sum(self.examples.values()), **{f"examples_{k}": v for k, v in sorted(self.examples.items())},
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "failures": dict(sorted(self.failures.items())), "transport_errors": self.transport_errors}


# ------------------------------------------------------------------------------------ routes

def _leaf_routes(app: Any) -> Iterator[Any]:
    def walk(routes: list[Any]) -> Iterator[Any]:
        for r in routes:
            if hasattr(r, "original_router"):  # recent FastAPI keeps included routers nested
                yield from walk(list(r.original_router.routes))
            elif isinstance(getattr(r, "path", None), str) and getattr(r, "methods", None):
                yield r

    return walk(list(app.routes))


def app_routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, path template) the app serves, hidden routes included; HEAD folded into GET."""
    out = {(m, r.path) for r in _leaf_routes(app) for m in r.methods if m != "HEAD"}
    return sorted(out, key=lambda x: (x[1], x[0]))


def router_matcher(app: Any) -> Callable[[str, str], bool]:
    """Whether the app's router would route ``method path`` (decoded path) to one of its routes."""
    compiled = [(r.methods, r.path_regex) for r in _leaf_routes(app)]
    return lambda method, path: any(method in methods and rx.match(path) for methods, rx in compiled)


def schema_operations(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted(((m.upper(), p) for p, ops in spec["paths"].items() for m in ops
                   if m in ("get", "put", "post", "delete", "patch")), key=lambda x: (x[1], x[0]))


def _normalise(path: str) -> str:
    return re.sub(r"\{([^}:]+)(:[^}]*)?\}", r"{\1}", path)


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "probe", path)


def probe_protected_routes(base_url: str, routes: list[tuple[str, str]]) -> dict[str, Any]:
    """Every route outside PUBLIC_BY_DESIGN, without a token and with bad credentials: 401 +
    WWW-Authenticate. Public routes must answer without a token (anything but 401/403)."""
    console = [r for r in routes if r[1] == CONSOLE or r[1].startswith(CONSOLE + "/")]
    protected = [r for r in routes if r not in PUBLIC_BY_DESIGN and r not in console]
    public = [r for r in routes if r in PUBLIC_BY_DESIGN]
    failed: list[str] = []
    credentials = {"no token": None, "garbage bearer": "Bearer not-a-jwt", "basic scheme": "Basic YWxpY2U6cHc=",
                   "bare scheme": "Bearer"}
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for method, path in protected:
            for label, value in credentials.items():
                headers = {"authorization": value} if value is not None else {}
                body = {} if method in ("POST", "PUT", "PATCH") else None
                r = http.request(method, _fill(path), headers=headers, json=body)
                challenge = r.headers.get("www-authenticate", "")
                if r.status_code != 401 or not challenge.startswith('Bearer realm="clearance"'):
                    failed.append(f"{method} {path} ({label}): {r.status_code} www-authenticate={challenge!r}")
        for method, path in public:
            r = http.request(method, _fill(path))
            if r.status_code in (401, 403):
                failed.append(f"{method} {path}: public by design but answered {r.status_code}")
        _probe_console(http, console, failed)
    return {"routes": len(routes), "protected": len(protected), "protected_routes": [f"{m} {p}" for m, p in protected],
            "public_by_design": [f"{m} {p}" for m, p in public], "protected_failed": failed,
            "credentials_tried": list(credentials)}


# ------------------------------------------------------------------------------------ fuzzing

def confine_ingest_path(case: Any, sandbox: Path) -> None:
    """``POST /v1/ingest/jobs`` walks a server directory: keep the generated name, but as one
    component inside ``sandbox`` (``/``, ``.``, ``..`` and separators cannot leave it)."""
    if case.method.upper() != "POST" or case.path != "/v1/ingest/jobs" or not isinstance(case.body, dict):
        return
    raw = case.body.get("path")
    if not isinstance(raw, str):
        return
    name = re.sub(r"[/\\]", "_", raw)
    if name in (".", ".."):
        name = "_" * len(name)
    case.body["path"] = str(sandbox / name) if name else str(sandbox)


def checks_for(identity: Identity, report: IdentityReport, routable: Callable[[str, str], bool]) -> list[Callable[..., Any]]:
    """The schema checks, plus ``ignored_auth`` for a caller with a token (on a 2xx, the same
    request without the token and with an invalid one must be refused) or the 401 check for
    anonymous callers."""
    return CHECKS + ([challenge_check(routable, report.unroutable)] if identity.anonymous else [ignored_auth])


def call_and_check(case: Any, label: str, identity: Identity, report: IdentityReport, checks: list[Callable[..., Any]],
                   *, base_url: str, session: requests.Session, headers: dict[str, str] | None,
                   timeout_s: float) -> None:
    """One request, then every check on its own (a failure is counted per check, never raised)."""
    try:
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=timeout_s)
    except requests.RequestException as exc:
        report.transport_errors += 1
        report.violations.append(f"[{identity.name}] {label}: {type(exc).__name__}")
        return
    report.statuses[response.status_code] += 1
    if response.status_code == 403:
        try:
            report.refusals[str(response.json()["error"]["code"])] += 1
        except (ValueError, KeyError, TypeError):
            report.refusals["?"] += 1
    transport = {"base_url": base_url, "session": session, "timeout": timeout_s, **({"headers": headers} if headers else {})}
    for check in checks:
        try:
            case.validate_response(response, checks=[check], headers=headers, transport_kwargs=transport)
        except (FailureGroup, AssertionError) as exc:
            report.failures[check.__name__] += 1
            first = exc.exceptions[0] if isinstance(exc, FailureGroup) else exc
            title = getattr(first, "title", None) or str(first)
            report.violations.append(f"[{identity.name}] {label} {check.__name__}: {response.status_code} {title}; "
                                     f"{case.as_curl_command()[:300]}")


MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def fuzz_identity(schema: Any, base_url: str, identity: Identity, token: str | None, *, examples: int, seed: int,
                  sandbox: Path, routable: Callable[[str, str], bool], timeout_s: float = 60.0) -> IdentityReport:
    """``examples`` positive and negative cases per operation as ``identity``."""
    report = IdentityReport()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    checks = checks_for(identity, report, routable)
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in MODES:
                @hyp_seed(seed)
                @hyp_settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                              suppress_health_check=list(HealthCheck), print_blob=False)
                @given(case=operation.as_strategy(generation_mode=mode))
                def run(case: Any) -> None:
                    confine_ingest_path(case, sandbox)
                    generated = [k for k in (case.headers or {}) if k.lower() == "authorization"]
                    if headers:
                        # The schema declares bearerAuth, so schemathesis generates (positive) or
                        # drops (negative) an Authorization header: the caller's own token replaces it.
                        case.headers = {**{k: v for k, v in (case.headers or {}).items() if k not in generated},
                                        **headers}
                    elif generated:
                        report.generated_credentials += 1  # anonymous, with a generated (never valid) token
                    report.examples[mode.value] += 1
                    call_and_check(case, f"{operation.label} ({mode.value})", identity, report, checks,
                                   base_url=base_url, session=session, headers=headers, timeout_s=timeout_s)

                try:
                    run()
                except Unsatisfiable:  # nothing to violate (no parameters, no body): no negative case
                    report.no_cases.append(f"{operation.label} ({mode.value})")
    return report


# Inputs the generators rarely or never produce (hypothesis draws no lone surrogates, and
# seldom dates at the ends of the calendar): most of them once made the server fail (500, or a
# 503 blaming the index) before the API refused them as a 422; the last two are paths the router
# cannot route (a 404 the schema must document). Run as every identity, same checks.
LONE = "\ud800"
DOC = {"source": "demo", "doc_id": "finance/budget-2027.md"}
EDGE_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/search", {"body": {"query": "budget", "modified_after": "0001-01-01T00:00:00+01:00"}}),
    ("POST", "/v1/search", {"body": {"query": "budget", "modified_before": "9999-12-31T23:59:59-01:00"}}),
    ("POST", "/v1/search", {"body": {"query": "budget", "modified_after": "0001-01-01T00:00:00"}}),
    ("POST", "/v1/search", {"body": {"query": "budget", "modified_before": "9999-12-31T23:59:59.999999Z"}}),
    ("POST", "/v1/search", {"body": {"query": LONE}}),
    ("POST", "/v1/search", {"body": {"query": "budget", "sources": [LONE]}}),
    ("POST", "/v1/search", {"body": {"query": "budget", "max_age": 2**63}}),
    ("POST", "/v1/search", {"body": {"query": "\x00", "mode": "bm25"}}),
    ("POST", "/v1/search", {"body": {"query": "budget", "top_k": 100, "explain": True}}),
    ("GET", "/v1/documents/{source}/{doc_id}", {"path_parameters": DOC}),
    ("GET", "/v1/admin/audit/documents/{source}/{doc_id}", {"path_parameters": DOC,
                                                            "query": {"since": "0001-01-01T00:00:00+01:00"}}),
    ("GET", "/v1/admin/audit/documents/{source}/{doc_id}", {"path_parameters": DOC,
                                                            "query": {"since": "9999-12-31T23:59:59-01:00"}}),
    ("PUT", "/v1/sources/{source}/documents/{doc_id}", {"path_parameters": {"source": "edge", "doc_id": "a"},
                                                         "body": {"filename": "a.md", "content": f"text {LONE}"}}),
    ("PUT", "/v1/sources/{source}/documents/{doc_id}", {"path_parameters": {"source": "edge", "doc_id": "a"},
                                                         "body": {"filename": "a.md", "content": "text", "title": LONE}}),
    ("PUT", "/v1/sources/{source}/documents/{doc_id}", {"path_parameters": {"source": "edge", "doc_id": "a"},
                                                         "body": {"filename": "a.md", "content": "text",
                                                                  "acl": {"allow": [f"group:{LONE}"]}}}),
    ("PUT", "/v1/sources/{source}/documents/{doc_id}", {"path_parameters": {"source": "edge", "doc_id": "a"},
                                                         "body": {"filename": "a.md", "content": "text",
                                                                  "modified_at": "0001-01-01T00:00:00+01:00"}}),
    ("PUT", "/v1/sources/{source}/documents/{doc_id}", {"path_parameters": {"source": "edge", "doc_id": "a"},
                                                         "body": {"filename": "a.docx", "content": "not a zip"}}),
    ("PUT", "/v1/sources/{source}/documents/{doc_id}", {"path_parameters": {"source": "edge", "doc_id": "a"},
                                                         "body": {"filename": "a.md", "content_base64": "!!"}}),
    ("PATCH", "/v1/sources/{source}/documents/{doc_id}/acl", {"path_parameters": DOC,
                                                               "body": {"allow": [f"group:{LONE}"]}}),
    ("POST", "/v1/ingest/jobs", {"body": {"path": LONE}}),
    # Path parameters no route can take (the router answers 404 before any handler runs).
    ("PUT", "/v1/sources/{source}/documents/{doc_id}", {"path_parameters": {"source": "a/b", "doc_id": "c"},
                                                         "body": {"filename": "a.md", "content": "text"}}),
    ("GET", "/v1/admin/audit/documents/{source}/{doc_id}", {"path_parameters": {"source": "demo", "doc_id": "a\nb"}}),
]


def run_edge_cases(schema: Any, base_url: str, identity: Identity, token: str | None, report: IdentityReport,
                   sandbox: Path, routable: Callable[[str, str], bool], timeout_s: float = 60.0) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    checks = checks_for(identity, report, routable)
    with requests.Session() as session:
        for method, path, parts in EDGE_CASES:
            case = schema[path][method].Case(**copy.deepcopy(parts))
            confine_ingest_path(case, sandbox)
            report.examples["edge"] += 1
            call_and_check(case, f"{method} {path} (edge {parts})", identity, report, checks,
                           base_url=base_url, session=session, headers=headers, timeout_s=timeout_s)


@dataclass
class FuzzOutcome:
    operations: list[str]
    per_identity: dict[str, IdentityReport]
    probe: dict[str, Any]
    schema_only: list[str]

    @property
    def failures_by_check(self) -> Counter[str]:
        total: Counter[str] = Counter({c.__name__: 0 for c in CHECKS + [ignored_auth]} | {"challenged_without_token": 0})
        for rep in self.per_identity.values():
            total.update(rep.failures)
        return total

    @property
    def server_errors(self) -> int:
        return sum(n for rep in self.per_identity.values() for s, n in rep.statuses.items() if s >= 500)

    @property
    def violations(self) -> list[str]:
        out = [v for rep in self.per_identity.values() for v in rep.violations]
        out += [f"protected route: {v}" for v in self.probe["protected_failed"]]
        out += [f"schema operation not served by the app: {v}" for v in self.schema_only]
        return out

    @property
    def passed(self) -> bool:
        return not self.violations and self.server_errors == 0 and not any(self.failures_by_check.values())

    def figures(self, examples: int, seed: int) -> dict[str, Any]:
        return {
            "operations_tested": len(self.operations),
            "identities": [i.name for i in IDENTITIES],
            "max_examples_per_operation_and_mode": examples,
            "seed": seed,
            **{f"examples_{name}": rep.examples["positive"] + rep.examples["negative"]
               for name, rep in self.per_identity.items()},
            "edge_cases_per_identity": len(EDGE_CASES),
            "operations_without_negative_cases": sorted({c for rep in self.per_identity.values() for c in rep.no_cases}),
            "requests_checked": sum(sum(rep.statuses.values()) for rep in self.per_identity.values()),
            "server_errors_5xx": self.server_errors,
            "failures_by_check": dict(self.failures_by_check),
            "transport_errors": sum(rep.transport_errors for rep in self.per_identity.values()),
            "anonymous_requests_with_generated_token": sum(rep.generated_credentials for rep in self.per_identity.values()),
            "anonymous_unroutable_404": dict(sum((rep.unroutable for rep in self.per_identity.values()), Counter())),
            "statuses_by_identity": {n: rep.figures()["statuses"] for n, rep in self.per_identity.items()},
            "routes_served": self.probe["routes"],
            "protected_routes_checked_401": self.probe["protected"],
            "protected_route_credentials_tried": self.probe["credentials_tried"],
            "protected_routes_failed": self.probe["protected_failed"],
            "protected_routes": self.probe["protected_routes"],
            "public_by_design": self.probe["public_by_design"],
        }


# ------------------------------------------------------------------------------------ server

@contextmanager
def serve(tmp: Path, *, corpus: Path | None = DEMO, log_level: str = "INFO") -> Iterator[tuple[Any, Any, str]]:
    """The real app on loopback with ``corpus`` ingested: (app, services, base_url)."""
    from api.app import create_app
    from app.services import build_services
    from core.settings import EmbedderSettings, Settings, StorageSettings
    from ingest.sources import FilesystemSource
    from testkit.live_server import LiveServer

    settings = Settings(storage=StorageSettings(data_dir=tmp / "var"), embedder=EmbedderSettings(kind="hash"),
                        log_level=log_level)
    services = build_services(settings)
    try:
        if corpus is not None:
            report = services.ingestor.sync(FilesystemSource(corpus, "demo"))
            if report.errors:
                raise RuntimeError(f"corpus ingest failed: {report.errors[:3]}")
        app = create_app(settings, services)
        with LiveServer(app) as server:
            yield app, services, server.url
    finally:
        services.close()


def run_fuzz(tmp: Path, *, examples: int, seed: int, corpus: Path | None = DEMO,
             identities: tuple[Identity, ...] = IDENTITIES, log_level: str = "INFO",
             log: Callable[[str], None] = lambda s: None) -> FuzzOutcome:
    sandbox = tmp / "ingest-sandbox"
    (sandbox / "notes").mkdir(parents=True)
    (sandbox / "notes" / "fuzz.md").write_text("# Fuzz\n\nA small note the ingest-job fuzzing may sync.\n")
    with serve(tmp, corpus=corpus, log_level=log_level) as (app, services, url):
        spec = httpx.get(f"{url}/openapi.json", timeout=30).json()
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = schema_operations(spec)
        routes = app_routes(app)
        served = {(m, _normalise(p)) for m, p in routes}
        schema_only = [f"{m} {p}" for m, p in operations if (m, p) not in served]
        probe = probe_protected_routes(url, routes)
        log(f"{len(operations)} operations in the schema, {len(routes)} routes served, "
            f"{probe['protected']} protected, {len(probe['protected_failed'])} failed the 401 probe")
        per_identity: dict[str, IdentityReport] = {}
        for ident in identities:
            t0 = time.time()
            token = None
            if not ident.anonymous:
                assert services.auth.dev is not None
                token = services.auth.dev.mint(ident.sub, groups=list(ident.groups), scopes=list(ident.scopes),
                                               ttl_s=3 * 3600)
            rep = fuzz_identity(schema, url, ident, token, examples=examples, seed=seed, sandbox=sandbox,
                                routable=router_matcher(app))
            run_edge_cases(schema, url, ident, token, rep, sandbox, router_matcher(app))
            per_identity[ident.name] = rep
            log(f"[{ident.name}] {sum(rep.examples.values())} examples in {time.time() - t0:.1f} s, "
                f"statuses {dict(sorted(rep.statuses.items()))}, failures {dict(rep.failures) or 'none'}")
    return FuzzOutcome([f"{m} {p}" for m, p in operations], per_identity, probe, schema_only)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m battery.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=100,
                        help="hypothesis examples per operation, per generation mode, per identity")
    parser.add_argument("--seed", type=int, default=20251)
    args = parser.parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="clearance-fuzz-") as tmp:
        outcome = run_fuzz(Path(tmp), examples=args.examples, seed=args.seed, log_level="WARNING",
                           log=lambda s: print(s, flush=True))
    figures = outcome.figures(args.examples, args.seed)
    command = "python -m battery.fuzz" + (f" --examples {args.examples}" if args.examples != 100 else "") + \
        (f" --seed {args.seed}" if args.seed != 20251 else "")
    path = write_result("fuzz", passed=outcome.passed, figures=figures, command=command,
                        violations=outcome.violations, started=started)
    for v in outcome.violations[:20]:
        print("VIOLATION", v)
    print(f"fuzz: {'PASS' if outcome.passed else 'FAIL'} in {time.time() - started:.0f} s -> {path}")
    return exit_code(outcome.passed)


if __name__ == "__main__":
    sys.exit(main())
