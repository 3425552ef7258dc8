"""Domain types shared by every layer.

Principals are prefixed strings (``user:``, ``group:``, ``role:``, ``tenant:``) so a user can
never collide with a group of the same name. Only the entitlement resolver (``auth``) makes
``Entitlements``; a ``Scope`` always carries them, there is no default scope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

PRINCIPAL_KINDS = ("user", "group", "role", "tenant")

SearchMode = Literal["hybrid", "dense", "bm25"]


def check_principal(p: str) -> str:
    kind, sep, name = p.partition(":")
    if not sep or kind not in PRINCIPAL_KINDS or not name or name != name.strip():
        raise ValueError(f"principal must look like 'user:…', 'group:…', 'role:…' or 'tenant:…', got {p!r}")
    return p


@dataclass(frozen=True)
class Acl:
    """Who may read a document. Deny beats allow; an empty allow list means nobody."""

    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for p in (*self.allow, *self.deny):
            check_principal(p)

    @classmethod
    def private(cls) -> "Acl":
        """Fail-closed ACL for sources that cannot state permissions."""
        return cls()

    def visible_to(self, principals: frozenset[str]) -> bool:
        return bool(self.allow & principals) and not (self.deny & principals)

    def as_dict(self) -> dict[str, list[str]]:
        return {"allow": sorted(self.allow), "deny": sorted(self.deny)}


@dataclass(frozen=True)
class Entitlements:
    """The resolved identity of a caller. Built only by ``auth``'s resolver."""

    subject: str
    issuer: str
    tenant: str
    principals: frozenset[str]
    scopes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for p in self.principals:
            check_principal(p)


@dataclass(frozen=True)
class Scope:
    """What a read may see: entitlements plus narrowing conditions (never widening)."""

    entitlements: Entitlements
    max_age_s: int | None = None
    sources: frozenset[str] | None = None
    modified_after: datetime | None = None
    modified_before: datetime | None = None
    # Admin/eval only: may bypass the ACL (never the tenant). Set it only where the reason is
    # written next to it.
    unrestricted_reason: str | None = None


@dataclass(frozen=True)
class Provenance:
    source: str
    doc_id: str
    uri: str
    title: str
    section: str
    page: int | None
    version: str
    content_hash: str
    modified_at: datetime
    ingested_at: datetime


@dataclass(frozen=True)
class Chunk:
    tenant: str
    chunk_index: int
    text: str
    provenance: Provenance
    acl: Acl
    element_types: tuple[str, ...] = ()

    @property
    def doc_key(self) -> str:
        return f"{self.provenance.source}/{self.provenance.doc_id}"


@dataclass(frozen=True)
class Hit:
    point_id: str
    score: float
    chunk: Chunk
    leg_scores: dict[str, float] = field(default_factory=dict)
    leg_ranks: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceDocument:
    """A document as a source presents it, before parsing."""

    source: str
    doc_id: str
    uri: str
    filename: str
    content: bytes
    acl: Acl
    modified_at: datetime
    title: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
