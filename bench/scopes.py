"""The benchmark's caller scopes, shared by ``bench.engine`` and ``bench.peer``: an ACL group, a
freshness clause and the deny list together set the share of points a query may see, so recall
and latency are measured against the *whole* compiled scope (a 50 % ACL with a 365-day clause
keeps ~25 %), across effective shares from 0.5 % to 95 %, the 15-40 % band included."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from bench.corpus import DENIED_USER, NOW_TS, acl_draws, allow_list
from core.types import Entitlements, Scope
from retrieval.scope_filter import CompiledFilter, compile_scope

DAY = 86_400
# (label, ACL group, freshness in days or None, caller in the deny list): effective share = ACL
# share x fresh share (age is uniform over two years) x 0.97 when the caller is denied.
SCOPES: list[tuple[str, str, int | None, bool]] = [
    ("acl1+365d", "group:vis01", 365, False),
    ("acl5+365d", "group:vis05", 365, False),
    ("acl10+365d", "group:vis10", 365, False),
    ("acl10", "group:vis10", None, False),
    ("acl50+219d", "group:vis50", 219, False),
    ("acl50+365d", "group:vis50", 365, False),
    ("acl50+365d+deny", "group:vis50", 365, True),
    ("acl95+292d", "group:vis95", 292, False),
    ("acl95+365d", "group:vis95", 365, False),
    ("acl50", "group:vis50", None, False),
    ("acl95", "group:vis95", None, False),
]


def principals_of(group: str, denied: bool) -> frozenset[str]:
    return frozenset({group, "user:bench", *([DENIED_USER] if denied else [])})


def scope_filter(group: str, days: int | None, denied: bool) -> CompiledFilter:
    """The production compiled filter (tenant, allow, deny, freshness) of the bench caller."""
    scope = Scope(Entitlements("bench", "bench", "bench", principals_of(group, denied)), max_age_s=days * DAY if days else None)
    return compile_scope(scope, now=datetime.fromtimestamp(NOW_TS, UTC))


def effective_share(n: int, group: str, days: int | None, denied: bool) -> float:
    k = np.arange(n)
    u, deny, age = acl_draws(k)
    ok = np.array([group in allow_list(float(x)) for x in u])
    if days is not None:
        ok &= age <= days * DAY
    if denied:
        ok &= ~deny
    return float(ok.mean())
