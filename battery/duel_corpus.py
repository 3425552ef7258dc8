"""Shared pieces of the leak duel (``battery.leak_duel``) and the ingestion state machine
(``battery.state_machine``): the real server, principals, the oracle and the read-path checks.

The environment is production code end to end: ``build_services`` (Qdrant Edge on disk, SQLite
catalog, the deterministic hash embedder: these checks are about entitlements, not ranking),
``create_app`` behind uvicorn on a loopback port, real dev-issuer tokens, every read over HTTP.
One composition differs from ``build_authenticator``'s dev branch, and only in configuration:
the dev issuer may also assert the tenant ``globex`` (``IssuerSettings.tenants``), so two
tenants share one index and one catalog and isolation between them is tested where it matters.
``globex`` documents are written by a second ``Ingestor`` (the same class, its tenant set to
``globex``) because the push API writes into the deployment's own tenant only.

The oracle never reads the index: a chunk is visible iff its document's tenant is the caller's,
its allow list holds any of the caller's principals, its deny list none of them, and it is fresh
enough (the ``archive`` source has a maximum age, queries may set ``max_age``). Chunk ids come
from the documented id scheme (``point_id(tenant/source/doc, n)``) and the chunk count the
ingestion call returned.

Each check counts, per read path: requests, items compared, **leaks** (returned but not
entitled), **misses** (entitled but not returned where the path must return it) and errors
(anything else that disagrees: wrong status, wrong explain, wrong audit).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx

from api.app import create_app
from app.services import Services, build_services
from auth.authenticator import Authenticator
from auth.keys import StaticKeys
from auth.principals import ClaimsResolver
from auth.validator import TokenValidator, TrustedIssuer
from core.audit import acl_fingerprint, principals_hash
from core.settings import EmbedderSettings, IngestSettings, RetrievalSettings, Settings, StorageSettings
from core.types import Acl, SourceDocument
from ingest.pipeline import Ingestor
from ingest.writer import point_id
from testkit.live_server import LiveServer
from testkit.sources import register_sources

DAY = 86_400
TENANT = "acme"  # the deployment's tenant: the push API writes here
FOREIGN = "globex"  # a second tenant in the same index and catalog
UNTRUSTED = "initech"  # a tenant the issuer may not assert: every token naming it is refused
ARCHIVE = "archive"  # the source with a maximum age
ARCHIVE_MAX_AGE_S = 365 * DAY
COMMON = "memo"  # in every title, hence in every chunk's BM25 terms
SEARCH, INGEST, ADMIN = "clearance:search", "clearance:ingest", "clearance:admin"
MODES = ("bm25", "dense", "hybrid")
MAX_TOP_K = 100  # the API's cap on top_k (api/routes/search.py)
PATHS = ("whoami", "count", "search_bm25", "search_dense", "search_hybrid", "explain", "document_get", "chunks",
         "admin_list", "audit", "writes", "index")


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- the server ---------------------------------------------------------------------------------




def duel_settings(data_dir: Path) -> Settings:
    return Settings(
        storage=StorageSettings(data_dir=data_dir),
        embedder=EmbedderSettings(kind="hash"),
        retrieval=RetrievalSettings(source_max_age_s={ARCHIVE: ARCHIVE_MAX_AGE_S}),
        log_level="WARNING",
    )


def two_tenant_authenticator(services: Services) -> Authenticator:
    """``build_authenticator``'s dev branch, with ``FOREIGN`` added to the tenants the dev issuer
    may assert (an OIDC issuer's ``tenants`` setting). Tokens naming any other tenant are refused."""
    dev = services.auth.dev
    assert dev is not None, "the duel runs in dev auth mode"
    issuer = dev.issuer_settings.model_copy(update={"tenants": [FOREIGN]})
    validator = TokenValidator([TrustedIssuer(issuer, StaticKeys(dev.jwks()))],
                               max_token_bytes=services.settings.auth.max_token_bytes)
    return Authenticator(validator, ClaimsResolver(), dev)


class DuelEnv:
    """Services + app + live server + HTTP client, in a data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.settings = duel_settings(data_dir)
        self.services = build_services(self.settings)
        self.services.auth = two_tenant_authenticator(self.services)
        s = self.services
        # The duel's and the state machine's push sources, written by the etl caller below.
        register_sources(s, ("wiki", "crm", "mail", ARCHIVE, "live"), writers=["user:etl"])
        self.foreign = Ingestor(IngestSettings(tenant=FOREIGN), s.catalog, s.index, s.embedder, s.bm25, metrics=s.metrics)
        self.server = LiveServer(create_app(self.settings, s))
        self.server.__enter__()
        self.http = httpx.Client(base_url=self.server.url, timeout=120)
        self._tokens: dict[Any, str] = {}
        self.ingest_headers = {"authorization": "Bearer " + self.mint("etl", scopes=[INGEST])}

    def close(self) -> None:
        try:
            self.http.close()
            self.server.__exit__()
        finally:
            self.services.close()

    def mint(self, sub: str, *, groups: Iterable[str] = (), roles: Iterable[str] = (), scopes: Iterable[str] = (SEARCH,),
             tenant: str = TENANT) -> str:
        dev = self.services.auth.dev
        assert dev is not None
        return dev.mint(sub, groups=list(groups), roles=list(roles), scopes=list(scopes), tenant=tenant)

    def headers(self, p: Principal) -> dict[str, str]:
        key = (p.sub, p.tenant, p.groups, p.roles, p.scopes)
        tok = self._tokens.get(key)
        if tok is None:
            tok = self._tokens[key] = self.mint(p.sub, groups=p.groups, roles=p.roles, scopes=p.scopes, tenant=p.tenant)
        return {"authorization": f"Bearer {tok}"}

    # -- writes ---------------------------------------------------------------------------------
    def put(self, doc: Doc) -> httpx.Response:
        """PUT through the push API (tenant ``acme`` only)."""
        assert doc.tenant == TENANT
        return self.http.put(f"/v1/sources/{doc.source}/documents/{doc.doc_id}", headers=self.ingest_headers,
                             json={"filename": f"{doc.doc_id}.txt", "content": doc.text, "title": doc.title,
                                   "modified_at": doc.modified.isoformat(),
                                   "acl": {"allow": sorted(doc.allow), "deny": sorted(doc.deny)}})

    def patch_acl(self, doc: Doc, allow: Iterable[str], deny: Iterable[str]) -> httpx.Response:
        return self.http.patch(f"/v1/sources/{doc.source}/documents/{doc.doc_id}/acl", headers=self.ingest_headers,
                               json={"allow": sorted(allow), "deny": sorted(deny)})

    def delete(self, source: str, doc_id: str) -> httpx.Response:
        return self.http.delete(f"/v1/sources/{source}/documents/{doc_id}", headers=self.ingest_headers)

    def foreign_apply(self, docs: list[Doc]) -> list[Any]:
        """``globex`` documents through the real pipeline (a second ``Ingestor``)."""
        return self.foreign.apply_many([d.source_document() for d in docs])


# -- principals and documents -------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    sub: str
    tenant: str = TENANT
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = (SEARCH,)
    kind: str = ""  # what the duel's figures group it under
    refused_code: str | None = None  # the 401 code every request must get (bad tenant, overage)

    @cached_property
    def principals(self) -> frozenset[str]:
        return frozenset({f"user:{self.sub}", f"tenant:{self.tenant}"} | {f"group:{g}" for g in self.groups}
                         | {f"role:{r}" for r in self.roles})

    @cached_property
    def phash(self) -> str:
        return principals_hash(self.principals)

    @property
    def authenticated(self) -> bool:
        return self.refused_code is None

    @property
    def can_search(self) -> bool:
        return self.authenticated and bool({SEARCH, ADMIN} & set(self.scopes))

    @property
    def is_admin(self) -> bool:
        return self.authenticated and ADMIN in self.scopes

    def label(self) -> str:
        return self._label

    @cached_property
    def _label(self) -> str:
        return f"{self.tenant}/{self.sub}[{self.kind or len(self.groups)}]"


@dataclass
class Doc:
    tenant: str
    source: str
    doc_id: str
    allow: frozenset[str]
    deny: frozenset[str]
    modified: datetime
    title: str
    text: str
    chunks: int = 0  # as returned by ingestion
    bucket: int = -1  # its title term ``bucket<N>`` (leak duel)

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.source}/{self.doc_id}"

    def chunk_ids(self) -> list[str]:
        return [point_id(self.key, n) for n in range(self.chunks)]

    def source_document(self) -> SourceDocument:
        return SourceDocument(self.source, self.doc_id, f"clearance://{self.source}/{self.doc_id}", f"{self.doc_id}.txt",
                              self.text.encode(), Acl(self.allow, self.deny), self.modified, title=self.title)

    def fresh(self, now: datetime, max_age_s: int | None = None) -> bool:
        if self.source == ARCHIVE and self.modified < now - timedelta(seconds=ARCHIVE_MAX_AGE_S):
            return False
        return max_age_s is None or self.modified >= now - timedelta(seconds=max_age_s)

    def granted(self, p: Principal) -> bool:
        """Tenant and ACL only (no freshness)."""
        ps = p.principals
        return self.tenant == p.tenant and bool(self.allow & ps) and not (self.deny & ps)

    def visible_to(self, p: Principal, now: datetime, *, max_age_s: int | None = None,
                   sources: frozenset[str] | None = None, modified_after: datetime | None = None) -> bool:
        if not p.can_search or not self.granted(p) or not self.fresh(now, max_age_s):
            return False
        if sources is not None and self.source not in sources:
            return False
        return modified_after is None or self.modified >= modified_after

    def why_hidden(self, p: Principal, now: datetime) -> str:
        """For a document ``p`` may not see: the closest reason (near misses first)."""
        ps = p.principals
        if self.allow & ps and self.deny & ps:
            return "denied"
        if self.tenant != p.tenant and self.allow & {f"user:{p.sub}", *(f"group:{g}" for g in p.groups),
                                                     *(f"role:{r}" for r in p.roles)}:
            return "other_tenant"
        if self.tenant == p.tenant and self.allow & ps and not self.fresh(now):
            return "stale"
        if not self.allow:
            return "private"
        return "no_grant"


# -- checks -------------------------------------------------------------------------------------


@dataclass
class PathStats:
    requests: int = 0
    items: int = 0
    leaks: int = 0
    misses: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "items": self.items, "leaks": self.leaks, "misses": self.misses,
                "errors": self.errors}


@dataclass
class Duel:
    """Read-path checks against the oracle, with counts per path."""

    env: DuelEnv
    stats: dict[str, PathStats] = field(default_factory=lambda: {p: PathStats() for p in PATHS})
    violations: list[str] = field(default_factory=list)
    # doc key -> principals hash -> answers that handed out its chunks (to check the audit trail)
    handed: dict[str, Counter] = field(default_factory=dict)
    context: str = ""  # prefixed to violations (the state machine's step)

    # -- bookkeeping ----------------------------------------------------------------------------
    def _bad(self, path: str, kind: str, n: int, msg: str) -> None:
        st = self.stats[path]
        setattr(st, kind, getattr(st, kind) + n)
        if len(self.violations) < 500:
            word = {"leaks": "leak", "misses": "miss", "errors": "error"}[kind]
            self.violations.append(f"{self.context}{path}: {word} x{n}: {msg}")

    def totals(self) -> dict[str, int]:
        out = PathStats()
        for st in self.stats.values():
            for k in ("requests", "items", "leaks", "misses", "errors"):
                setattr(out, k, getattr(out, k) + getattr(st, k))
        return out.as_dict()

    def per_path(self) -> dict[str, dict[str, int]]:
        return {k: v.as_dict() for k, v in self.stats.items() if v.requests}

    def _handed(self, p: Principal, keys: Iterable[str]) -> None:
        for key in set(keys):
            self.handed.setdefault(key, Counter())[p.phash] += 1

    def _refused(self, path: str, p: Principal, r: httpx.Response, what: str, expect: int) -> bool:
        """For a caller who must be refused: True when it was (no data either way counts as a leak)."""
        self.stats[path].requests += 1
        if r.status_code == expect:
            code = r.json().get("error", {}).get("code")
            if p.refused_code is not None and code != p.refused_code:
                self._bad(path, "errors", 1, f"{p.label()} {what}: code {code}, expected {p.refused_code}")
            return True
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        n = len(body.get("hits", [])) + len(body.get("chunks", [])) + len(body.get("documents", []))
        n += 1 if "visible_chunks" in body else 0
        self._bad(path, "leaks" if r.status_code == 200 else "errors", max(n, 1),
                  f"{p.label()} {what}: status {r.status_code}, expected {expect}")
        return False

    # -- whoami ---------------------------------------------------------------------------------
    def whoami(self, p: Principal) -> None:
        r = self.env.http.get("/v1/whoami", headers=self.env.headers(p))
        if not p.authenticated:
            self._refused("whoami", p, r, "whoami", 401)
            return
        st = self.stats["whoami"]
        st.requests += 1
        st.items += len(p.principals)
        if r.status_code != 200:
            self._bad("whoami", "errors", 1, f"{p.label()}: status {r.status_code}")
            return
        body = r.json()
        got = set(body["principals"])
        if got - p.principals:  # the server grants more than the oracle assumes
            extra = sorted(got - p.principals)
            self._bad("whoami", "leaks", len(extra), f"{p.label()}: extra principals {extra[:5]}")
        if p.principals - got:
            missing = sorted(p.principals - got)
            self._bad("whoami", "misses", len(missing), f"{p.label()}: missing principals {missing[:5]}")
        if body["tenant"] != p.tenant:
            self._bad("whoami", "errors", 1, f"{p.label()}: tenant {body['tenant']}")

    # -- count ----------------------------------------------------------------------------------
    def count(self, p: Principal, expected: int) -> None:
        r = self.env.http.get("/v1/chunks/count", headers=self.env.headers(p))
        if not p.can_search:
            self._refused("count", p, r, "count", 403 if p.authenticated else 401)
            return
        st = self.stats["count"]
        st.requests += 1
        st.items += expected
        if r.status_code != 200:
            self._bad("count", "errors", 1, f"{p.label()}: status {r.status_code}")
            return
        got = int(r.json()["visible_chunks"])
        if got > expected:
            self._bad("count", "leaks", got - expected, f"{p.label()}: {got} visible chunks, oracle {expected}")
        elif got < expected:
            self._bad("count", "misses", expected - got, f"{p.label()}: {got} visible chunks, oracle {expected}")

    # -- search ---------------------------------------------------------------------------------
    def search(self, p: Principal, *, mode: str, query: str, allowed: dict[str, Doc], top_k: int = MAX_TOP_K,
               must: set[str] | None = None, explain: bool = False, extra: dict[str, Any] | None = None,
               path: str | None = None) -> list[str]:
        """One search. ``allowed``: the chunks this caller may get under this query's narrowing
        (chunk id -> document). ``must``: chunks it must return (all of them fit in ``top_k``);
        without it the answer must hold ``min(top_k, len(allowed))`` hits."""
        path = path or ("explain" if explain else f"search_{mode}")
        body = {"query": query, "top_k": top_k, "mode": mode, "explain": explain, **(extra or {})}
        r = self.env.http.post("/v1/search", json=body, headers=self.env.headers(p))
        what = f"{mode} {query[:40]!r} {extra or ''}"
        if not p.can_search:
            self._refused(path, p, r, what, 403 if p.authenticated else 401)
            return []
        st = self.stats[path]
        st.requests += 1
        if r.status_code != 200:
            self._bad(path, "errors", 1, f"{p.label()} {what}: status {r.status_code} {r.text[:200]}")
            return []
        hits = r.json()["hits"]
        got = [h["id"] for h in hits]
        st.items += len(got)
        leaked = [i for i in got if i not in allowed]
        if leaked:
            self._bad(path, "leaks", len(leaked), f"{p.label()} {what}: not entitled {leaked[:3]}")
        if len(set(got)) != len(got):
            self._bad(path, "errors", 1, f"{p.label()} {what}: duplicate hits")
        if must is not None and len(must) <= top_k:
            missed = must - set(got)
            st.items += len(missed)
            if missed:
                self._bad(path, "misses", len(missed),
                          f"{p.label()} {what}: entitled but absent {sorted(missed)[:3]}")
        elif must is not None:  # more matches than fit: the answer must be full of them
            inside = len(set(got) & must)
            if inside < top_k:
                self._bad(path, "misses", top_k - inside,
                          f"{p.label()} {what}: {inside} of {len(must)} matches, expected {top_k}")
        else:
            want = min(top_k, len(allowed))
            if len(got) - len(leaked) < want:
                self._bad(path, "misses", want - (len(got) - len(leaked)),
                          f"{p.label()} {what}: {len(got) - len(leaked)} entitled hits, expected {want}")
        keys = []
        for h in hits:
            doc = allowed.get(h["id"])
            if doc is None:
                continue
            keys.append(doc.key)
            prov = h["provenance"]
            if (prov.get("source"), prov.get("doc_id")) != (doc.source, doc.doc_id):
                self._bad(path, "errors", 1, f"{p.label()} {what}: hit {h['id']} says "
                                             f"{prov.get('source')}/{prov.get('doc_id')}, is {doc.key}")
            if explain:
                granted = sorted(doc.allow & p.principals)
                got_granted = (h.get("explain") or {}).get("granted_by")
                if got_granted != granted:
                    self._bad(path, "errors", 1, f"{p.label()} {what}: granted_by {got_granted}, oracle {granted}")
        self._handed(p, keys)
        return got

    # -- document reads -------------------------------------------------------------------------
    def document(self, p: Principal, source: str, doc_id: str, expected: Doc | None) -> None:
        """GET a document; ``expected``: the caller's-tenant document it must get, or None (404)."""
        r = self.env.http.get(f"/v1/documents/{source}/{doc_id}", headers=self.env.headers(p))
        what = f"{source}/{doc_id}"
        if not p.can_search:
            self._refused("document_get", p, r, what, 403 if p.authenticated else 401)
            return
        get, chunks = self.stats["document_get"], self.stats["chunks"]
        get.requests += 1
        get.items += 1
        if expected is None:
            if r.status_code == 200:
                n = len(r.json().get("chunks", []))
                self._bad("document_get", "leaks", 1, f"{p.label()} {what}: 200 with {n} chunks, not entitled")
                chunks.items += n
                if n:
                    self._bad("chunks", "leaks", n, f"{p.label()} {what}: {n} chunks of a document not entitled")
            elif r.status_code != 404 or r.json().get("error", {}).get("code") != "not_found" \
                    or r.json()["error"].get("message") != "document not found":
                self._bad("document_get", "errors", 1,
                          f"{p.label()} {what}: {r.status_code} {r.text[:120]} (want the plain 404)")
            return
        if r.status_code != 200:
            self._bad("document_get", "misses", 1, f"{p.label()} {what}: status {r.status_code}, entitled")
            self._bad("chunks", "misses", expected.chunks, f"{p.label()} {what}: no chunks, entitled")
            chunks.items += expected.chunks
            return
        body = r.json()
        chunks.requests += 1
        got = [c["id"] for c in body["chunks"]]
        want = expected.chunk_ids()
        chunks.items += len(set(got) | set(want))
        extra, missing = set(got) - set(want), set(want) - set(got)
        if extra:
            self._bad("chunks", "leaks", len(extra),
                      f"{p.label()} {what}: chunks not of this document {sorted(extra)[:3]}")
        if missing:
            self._bad("chunks", "misses", len(missing), f"{p.label()} {what}: chunks missing {sorted(missing)[:3]}")
        if not extra and not missing and got != want:
            self._bad("chunks", "errors", 1, f"{p.label()} {what}: chunks out of order")
        if (body.get("source"), body.get("doc_id")) != (source, doc_id):
            self._bad("document_get", "errors", 1,
                      f"{p.label()} {what}: body names {body.get('source')}/{body.get('doc_id')}")
        self._handed(p, [expected.key] if got else [])

    # -- operator paths -------------------------------------------------------------------------
    def admin_list(self, p: Principal, expected_keys: set[str], foreign_keys: set[str]) -> None:
        """``GET /v1/admin/documents``, paged: an admin gets exactly its tenant's documents."""
        path = "admin_list"
        if not p.is_admin or p.tenant != TENANT:  # admin reads act on the deployment's tenant only
            r = self.env.http.get("/v1/admin/documents", headers=self.env.headers(p))
            self._refused(path, p, r, "list", 403 if p.authenticated else 401)
            return
        got: set[str] = set()
        offset, total = 0, None
        st = self.stats[path]
        while total is None or offset < total:
            r = self.env.http.get("/v1/admin/documents", params={"limit": 1000, "offset": offset},
                                  headers=self.env.headers(p))
            st.requests += 1
            if r.status_code != 200:
                self._bad(path, "errors", 1, f"{p.label()}: status {r.status_code}")
                return
            body = r.json()
            total = int(body["total"])
            got |= {d["key"] for d in body["documents"]}
            offset += 1000
        st.items += len(got | expected_keys)
        extra, missing = got - expected_keys, expected_keys - got
        if extra:
            bad = extra & foreign_keys or extra
            self._bad(path, "leaks", len(extra), f"{p.label()}: lists documents outside its tenant {sorted(bad)[:3]}")
        if missing:
            self._bad(path, "misses", len(missing), f"{p.label()}: does not list {sorted(missing)[:3]}")

    def audit(self, admin: Principal, doc: Doc, entitled: dict[str, Principal]) -> None:
        """``GET /v1/admin/audit/documents/…``: who was handed ``doc`` equals what the clients of
        this run were handed (per principal set), each of them entitled, with the document's ACL
        fingerprint. ``entitled``: principals hash -> principal, for every caller of the run."""
        path = "audit"
        r = self.env.http.get(f"/v1/admin/audit/documents/{doc.source}/{doc.doc_id}", params={"limit": 10_000},
                              headers=self.env.headers(admin))
        if admin.tenant != TENANT:  # another tenant's admin: refused (403 wrong_tenant), nothing read
            self._refused(path, admin, r, "audit", 403)
            return
        st = self.stats[path]
        st.requests += 1
        if r.status_code != 200:
            self._bad(path, "errors", 1, f"{admin.label()} {doc.key}: status {r.status_code}")
            return
        reads = r.json()["reads"]
        got = Counter(x["principals_hash"] for x in reads)
        want = self.handed.get(doc.key, Counter())
        st.items += sum((got | want).values())
        fp = acl_fingerprint(doc.allow, doc.deny)
        for x in reads:
            who = entitled.get(x["principals_hash"])
            if who is None or not doc.granted(who):
                self._bad(path, "leaks", 1,
                          f"{doc.key}: audit says it was handed to {who.label() if who else 'an unknown caller'}")
            if x["acl"] != fp:
                self._bad(path, "errors", 1, f"{doc.key}: audit ACL fingerprint {x['acl']}, oracle {fp}")
        missing, extra = want - got, got - want
        if missing:
            n = sum(missing.values())
            self._bad(path, "misses", n, f"{doc.key}: {n} answers holding it are not in the audit trail")
        if extra:
            n = sum(extra.values())
            self._bad(path, "errors", n, f"{doc.key}: {n} audit reads no client of this run received")
