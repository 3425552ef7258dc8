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
MAX_PRINCIPAL_VALUE_CHARS = 256

SearchMode = Literal["hybrid", "dense", "bm25"]
FusionMethod = Literal["relative", "rrf"]  # how hybrid merges its legs (retrieval.fusion)


def principal_problem(p: object) -> str | None:
    """Why ``p`` is not a principal, or None when it is one. The one grammar, used by manifests,
    the push API (PUT and PATCH), source writer lists and token mapping (``auth.principals``):

    - ``kind:value`` with ``kind`` exactly one of ``user``, ``group``, ``role``, ``tenant``
      (lower case: ``Group:x`` is refused, not folded);
    - ``value`` non-empty, at most 256 characters, printable (no control or format characters:
      ``group:fin\\u0000`` is refused), no whitespace at either end, no ``*`` (no wildcards: a
      principal names one identity);
    - no ``:`` in the value except for roles, whose names mirror OAuth scopes
      (``role:clearance:ingest``): ``user:a:b`` and ``group:a:b`` are refused.
    """
    if not isinstance(p, str):
        return f"principal must be a string, got {type(p).__name__}"
    kind, sep, value = p.partition(":")
    if not sep or kind not in PRINCIPAL_KINDS:
        return f"principal must look like 'user:…', 'group:…', 'role:…' or 'tenant:…', got {p!r}"
    if not value:
        return f"principal {p!r} has an empty name"
    if len(value) > MAX_PRINCIPAL_VALUE_CHARS:
        return f"principal {p[:40]!r}… is longer than {MAX_PRINCIPAL_VALUE_CHARS} characters"
    if not value.isprintable():
        return f"principal {p!r} holds a control or non-printable character"
    if value != value.strip():
        return f"principal {p!r} has whitespace at an end"
    if "*" in value:
        return f"principal {p!r} holds '*': wildcards are not principals"
    if ":" in value and kind != "role":
        return f"principal {p!r} holds a second ':' (only role names may)"
    return None


def check_principal(p: str) -> str:
    """``p`` if it follows the principal grammar (:func:`principal_problem`), else ValueError."""
    problem = principal_problem(p)
    if problem is not None:
        raise ValueError(problem)
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
    def private(cls) -> Acl:
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
