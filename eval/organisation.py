"""A simulated organisation over any corpus (seeded, reproducible): departments own documents,
some documents are company-wide, some carry deny entries, every document has a modification
date within the last two years; personas hold department memberships. The ACLs are the oracle
for leakage: a returned chunk whose document the persona may not see is a leak."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.types import Acl

DEPARTMENTS = ("finance", "hr", "engineering", "legal", "sales", "research")


@dataclass(frozen=True)
class Persona:
    name: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Organisation:
    tenant: str
    acls: dict[str, Acl]
    modified: dict[str, datetime]
    personas: tuple[Persona, ...]

    def principals(self, p: Persona) -> frozenset[str]:
        return frozenset({f"user:{p.name}", f"tenant:{self.tenant}", *(f"group:{g}" for g in p.groups)})

    def visible(self, p: Persona, doc_id: str) -> bool:
        return self.acls[doc_id].visible_to(self.principals(p))


PERSONAS = (
    Persona("fiona", ("finance",)),
    Persona("hank", ("hr",)),
    Persona("erik", ("engineering", "research")),
    Persona("lena", ("legal",)),
    Persona("sam", ("sales", "finance")),
    Persona("nina", ()),  # no groups: company-wide documents only
)


def simulate(doc_ids: list[str], *, tenant: str = "eval", seed: int = 13, public_share: float = 0.2,
             deny_share: float = 0.05, now: datetime | None = None) -> Organisation:
    rng = random.Random(seed)
    now = now or datetime(2026, 11, 1, tzinfo=UTC)
    acls: dict[str, Acl] = {}
    modified: dict[str, datetime] = {}
    names = [p.name for p in PERSONAS]
    for doc_id in sorted(doc_ids):
        dept = rng.choice(DEPARTMENTS)
        allow = {f"group:{dept}"}
        if rng.random() < public_share:
            allow = {f"tenant:{tenant}"}
        elif rng.random() < 0.1:
            allow.add(f"group:{rng.choice(DEPARTMENTS)}")  # shared between two departments
        deny = {f"user:{rng.choice(names)}"} if rng.random() < deny_share else set()
        acls[doc_id] = Acl(frozenset(allow), frozenset(deny))
        modified[doc_id] = now - timedelta(days=rng.uniform(0, 730))
    return Organisation(tenant, acls, modified, PERSONAS)
