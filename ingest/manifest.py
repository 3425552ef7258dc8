"""ACL manifest for a filesystem source (``acl.toml`` at the root of the ingested folder).

Inheritance: a file takes ``allow`` from its own entry if it has one, else from the nearest
folder entry above it that sets ``allow``; ``deny`` accumulates from every folder above it and
its own entry. A file that no entry covers is private (fail closed).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.errors import ConfigError
from core.types import Acl, check_principal

MANIFEST_NAME = "acl.toml"


@dataclass(frozen=True)
class _Entry:
    allow: tuple[str, ...] | None
    deny: tuple[str, ...]


@dataclass(frozen=True)
class AclManifest:
    tenant: str | None
    folders: dict[str, _Entry]
    files: dict[str, _Entry]

    @classmethod
    def empty(cls) -> "AclManifest":
        return cls(None, {}, {})

    @classmethod
    def load(cls, root: Path) -> "AclManifest":
        path = root / MANIFEST_NAME
        if not path.exists():
            return cls.empty()
        try:
            data = tomllib.loads(path.read_text("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}", code="manifest_invalid") from exc
        unknown = set(data) - {"tenant", "folders", "files"}
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)}", code="manifest_invalid")
        return cls(
            data.get("tenant"),
            {_norm(k): _entry(path, k, v) for k, v in data.get("folders", {}).items()},
            {_norm(k): _entry(path, k, v) for k, v in data.get("files", {}).items()},
        )

    def acl_for(self, rel_path: str) -> Acl:
        rel = PurePosixPath(_norm(rel_path))
        allow: tuple[str, ...] | None = None
        deny: list[str] = []
        for folder in [PurePosixPath("."), *reversed(rel.parents[:-1])]:
            entry = self.folders.get(str(folder))
            if entry is not None:
                if entry.allow is not None:
                    allow = entry.allow
                deny.extend(entry.deny)
        own = self.files.get(str(rel))
        if own is not None:
            if own.allow is not None:
                allow = own.allow
            deny.extend(own.deny)
        return Acl(frozenset(allow or ()), frozenset(deny))


def _norm(p: str) -> str:
    s = str(PurePosixPath(p.strip("/"))) if p.strip("/") else "."
    return s


def _entry(path: Path, key: str, value: object) -> _Entry:
    if not isinstance(value, dict) or set(value) - {"allow", "deny"}:
        raise ConfigError(f"{path}: entry {key!r} may only have 'allow' and 'deny' lists", code="manifest_invalid")
    try:
        allow = tuple(check_principal(p) for p in value["allow"]) if "allow" in value else None
        deny = tuple(check_principal(p) for p in value.get("deny", []))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: entry {key!r}: {exc}", code="manifest_invalid") from exc
    return _Entry(allow, deny)
