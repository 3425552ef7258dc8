"""Validated claims → ``Entitlements``: the only place entitlements are made.

Principals (prefixed, so a user never collides with a group of the same name):

- ``user:<namespace>/<sub>`` (or ``user:<sub>`` for an issuer without a namespace): identity
  is ``iss`` + ``sub``; with several issuers every one has its own namespace, so two issuers'
  subjects never collide. A client-credentials token (``sub`` equals the ``client_id`` claim)
  is a service account: ``user:<namespace>/<client_id>`` plus ``role:<service_account_role>``.
- ``user:<email>`` only when the issuer names an ``email_claim`` and, unless switched off,
  the token says ``email_verified: true``.
- ``group:<g>`` for each group value, after the group map; ``role:<r>`` for each role.
- ``tenant:<t>``: the issuer's tenant, or the token's tenant claim if the issuer may assert it
  (``tenant`` or ``tenants``); any other tenant value is refused (401).

Every principal is checked against the one grammar (``core.types.principal_problem``: known
kind, non-empty printable value of at most 256 characters, no whitespace at an end, no ``*``, no
second ``:`` except in role names); a value that does not form one is ignored (groups, roles,
email: the caller sees less, never more) or refused with a 401 (subject, tenant). Group and role claims are one
value per string: only ``scope`` is space-separated.

Group overage (fail closed): a token whose groups cannot all be listed (Entra ID's
``_claim_names`` pointing the groups claim elsewhere, ``hasgroups: true``, or more than the
issuer's ``max_groups`` values) is refused with 401 ``group_overage`` unless a
``GroupDirectory`` is configured to look the groups up, or the issuer sets
``group_overage = "drop_groups"`` (the caller then gets no group principal: it sees less,
never more).

Directory expansion (``auth.directory``, issuers with ``directory = "merge"``): a
``GroupExpander`` adds the caller's directory groups (nested groups expanded) and the ancestors
of token groups that name directory groups, after the group map; on an overage the token's
groups are left out and the directory's groups are the caller's groups (none for a caller the
directory does not know).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from auth.errors import token_error
from auth.group_map import GroupMap
from auth.validator import ValidatedToken
from core.logging import Log
from core.settings import IssuerSettings
from core.types import Entitlements, principal_problem

log = Log("clearance.auth")
MAX_NAME_CHARS = 256


class GroupDirectory(Protocol):
    """Looks up a caller's groups when the token cannot carry them all (group overage)."""

    def groups_for(self, token: ValidatedToken) -> Sequence[str]:
        """All IdP group values of the token's subject; raise ``BackendUnavailableError`` if down."""
        ...


@runtime_checkable
class GroupExpander(Protocol):
    """A ``GroupDirectory`` that also expands groups per issuer (``auth.directory``)."""

    def enabled_for(self, cfg: IssuerSettings) -> bool:
        """Whether this issuer's callers are expanded (its policy is not ``off``)."""
        ...

    def groups_for(self, token: ValidatedToken) -> Sequence[str]:
        ...

    def expand(self, token: ValidatedToken, token_groups: frozenset[str]) -> frozenset[str]:
        """ACL group names to add to ``token_groups`` (already through the group map)."""
        ...


def claim(claims: dict[str, object], path: str) -> object:
    """The claim at ``path``: the whole name first (``cognito:groups``), then dotted parts."""
    if not path:
        return None
    if path in claims:
        return claims[path]
    cur: object = claims
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _values(value: object) -> list[object]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    return []


def principal(kind: str, value: object) -> str | None:
    """``kind:value`` when it is a principal under the one grammar, else None."""
    if not isinstance(value, str):
        return None
    p = f"{kind}:{value}"
    return p if principal_problem(p) is None else None


def clean_name(value: object) -> str | None:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        return None
    if value != value.strip() or not value.isprintable():
        return None
    return value


class ClaimsResolver:
    """Maps validated claims to entitlements per the issuer's claim paths."""

    def __init__(self, group_map: GroupMap | None = None, directory: GroupDirectory | None = None) -> None:
        self.group_map = group_map or GroupMap()
        self.directory = directory

    def resolve(self, token: ValidatedToken) -> Entitlements:
        cfg, claims = token.issuer, token.claims
        sub = clean_name(claim(claims, cfg.user_claim))
        if sub is None:
            raise token_error("token has no usable subject")
        user = f"{cfg.user_namespace}/{sub}" if cfg.user_namespace else sub
        tenant = self._tenant(token)
        user_p, tenant_p = principal("user", user), principal("tenant", tenant)
        if user_p is None or tenant_p is None:
            raise token_error("token claims do not form valid principals")
        principals = {user_p, tenant_p}
        if cfg.service_account_role and claim(claims, cfg.client_id_claim) == sub:
            principals.add(f"role:{cfg.service_account_role}")
        email = self._email(token)
        if email is not None and (email_p := principal("user", email)) is not None:
            principals.add(email_p)
        principals |= {p for g in self._groups(token) if (p := principal("group", g)) is not None}
        principals |= {p for r in _values(claim(claims, cfg.roles_claim)) if (p := principal("role", r)) is not None}
        scopes = self._scopes(claim(claims, cfg.scope_claim))
        try:
            return Entitlements(subject=user, issuer=cfg.issuer, tenant=tenant,
                                principals=frozenset(principals), scopes=scopes)
        except ValueError:
            raise token_error("token claims do not form valid principals") from None

    def _tenant(self, token: ValidatedToken) -> str:
        cfg = token.issuer
        value = claim(token.claims, cfg.tenant_claim)
        if value is None:
            return cfg.tenant
        if isinstance(value, str) and value in (cfg.tenant, *cfg.tenants):
            return value
        raise token_error("token names a tenant this issuer may not assert", code="tenant_not_allowed")

    def _email(self, token: ValidatedToken) -> str | None:
        cfg, claims = token.issuer, token.claims
        if not cfg.email_claim:
            return None
        email = clean_name(claim(claims, cfg.email_claim))
        if email is None or "@" not in email or " " in email:
            return None
        if cfg.require_email_verified and claims.get("email_verified") is not True:
            return None
        return email.lower()

    def _groups(self, token: ValidatedToken) -> set[str]:
        cfg, claims = token.issuer, token.claims
        raw = _values(claim(claims, cfg.groups_claim))
        expander = self.directory if isinstance(self.directory, GroupExpander) and self.directory.enabled_for(cfg) else None
        if _overage(claims, cfg.groups_claim) or len(raw) > cfg.max_groups:
            if expander is not None:
                log.info("auth.group_overage", issuer=cfg.issuer, outcome="directory")
                raw = []  # the token's list is incomplete: the directory answers alone (below)
            elif self.directory is not None and not isinstance(self.directory, GroupExpander):
                raw = list(self.directory.groups_for(token))
            elif cfg.group_overage == "drop_groups":
                log.warning("auth.group_overage", issuer=cfg.issuer, outcome="dropped")
                return set()
            else:
                log.warning("auth.group_overage", issuer=cfg.issuer, outcome="refused")
                raise token_error("token carries too many groups to list", code="group_overage")
        out: set[str] = set()
        for value in raw:
            v = clean_name(value)
            if v is None:
                continue
            out.update(n for n in self.group_map.names(cfg.issuer, v) if clean_name(n))
        if expander is not None:
            out.update(n for n in expander.expand(token, frozenset(out)) if clean_name(n))
        return out

    @staticmethod
    def _scopes(value: object) -> frozenset[str]:
        if isinstance(value, str):
            return frozenset(value.split())
        return frozenset(s for s in map(clean_name, _values(value)) if s and " " not in s)


def _overage(claims: dict[str, object], groups_claim: str) -> bool:
    names = claims.get("_claim_names")
    if isinstance(names, dict) and groups_claim.split(".")[0] in names:
        return True
    return claims.get("hasgroups") is True or claims.get("hasgroups") == "true"
