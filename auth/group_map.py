"""IdP group values → ACL group names, from an optional JSON file (``auth.group_map_path``).

Format (every key optional)::

    {
      "unmapped": "keep",                      # or "drop": only mapped groups become principals
      "groups":  {"7f3c…": "finance"},         # for every issuer
      "issuers": {"https://login.example/v2.0": {"0b1e…": ["hr", "hr-readers"]}}
    }

An issuer's own table wins over ``groups`` for the same value; a value may map to several
names. The file is checked when the server starts: a malformed file is a ``ConfigError``, never
a silently empty map.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError


@dataclass(frozen=True)
class GroupMap:
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    per_issuer: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    keep_unmapped: bool = True

    @classmethod
    def load(cls, path: Path) -> GroupMap:
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"group map {path}: {exc}", code="group_map_invalid") from None
        return cls.parse(data, where=str(path))

    @classmethod
    def parse(cls, data: Any, *, where: str = "group map") -> GroupMap:
        def fail(why: str) -> ConfigError:
            return ConfigError(f"{where}: {why}", code="group_map_invalid")

        if not isinstance(data, dict) or set(data) - {"unmapped", "groups", "issuers"}:
            raise fail("expected an object with 'unmapped', 'groups' and 'issuers'")
        unmapped = data.get("unmapped", "keep")
        if unmapped not in ("keep", "drop"):
            raise fail("'unmapped' must be 'keep' or 'drop'")
        issuers = data.get("issuers", {})
        if not isinstance(issuers, dict):
            raise fail("'issuers' must map issuer URLs to tables")
        return cls(_table(data.get("groups", {}), fail),
                   {iss: _table(t, fail) for iss, t in issuers.items()},
                   unmapped == "keep")

    def names(self, issuer: str, value: str) -> tuple[str, ...]:
        """ACL group names for one IdP group value (empty: the value grants nothing)."""
        table = self.per_issuer.get(issuer, {})
        if value in table:
            return table[value]
        if value in self.groups:
            return self.groups[value]
        return (value,) if self.keep_unmapped else ()


def _table(raw: Any, fail: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise fail("a group table must be an object")
    out: dict[str, tuple[str, ...]] = {}
    for k, v in raw.items():
        names = [v] if isinstance(v, str) else v
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() == n and n for n in names):
            raise fail(f"group {k!r} must map to a name or a list of names")
        out[k] = tuple(names)
    return out
