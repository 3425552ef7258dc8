"""Claims → ``Entitlements``: the only place entitlements are made.

Principals: ``user:<namespace/>sub`` (identity from ``iss`` + ``sub``: an issuer with a
namespace prefixes its subjects so two issuers never collide), ``group:<g>`` for each group
claim value, ``role:<r>`` for each role, ``tenant:<t>`` for the caller's tenant (documents
shared with the whole organisation allow ``tenant:<t>``). Claim paths may be dotted
(``realm_access.roles``); values that are not strings are ignored.
"""

from __future__ import annotations

from typing import Any

from auth.validator import ValidatedToken
from core.errors import AuthenticationError
from core.types import Entitlements


def claim(claims: dict[str, Any], path: str) -> Any:
    cur: Any = claims
    if path in claims:
        return claims[path]
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v for v in value.split() if v] if " " in value else [value]
    if isinstance(value, list):
        return [v.strip() for v in value if isinstance(v, str) and v.strip()]
    return []


def _clean(name: str) -> bool:
    return bool(name) and not any(c.isspace() for c in name)


class ClaimsResolver:
    """Maps validated claims to entitlements per the issuer's claim paths."""

    def __init__(self, group_map: dict[str, str] | None = None) -> None:
        self.group_map = group_map or {}

    def resolve(self, token: ValidatedToken) -> Entitlements:
        cfg, claims = token.issuer, token.claims
        sub = claim(claims, cfg.user_claim)
        if not isinstance(sub, str) or not sub.strip():
            raise AuthenticationError("token has no subject")
        tenant_values = _strings(claim(claims, cfg.tenant_claim))
        tenant = tenant_values[0] if tenant_values else cfg.tenant
        user = f"{cfg.user_namespace}/{sub}" if cfg.user_namespace else sub
        principals = {f"user:{user}", f"tenant:{tenant}"}
        for g in _strings(claim(claims, cfg.groups_claim)):
            g = self.group_map.get(g, g)
            if _clean(g):
                principals.add(f"group:{g}")
        for r in _strings(claim(claims, cfg.roles_claim)):
            if _clean(r):
                principals.add(f"role:{r}")
        scopes = frozenset(_strings(claim(claims, cfg.scope_claim)))
        return Entitlements(subject=user, issuer=cfg.issuer, tenant=tenant, principals=frozenset(principals), scopes=scopes)
