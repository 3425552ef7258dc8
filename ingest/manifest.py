"""ACL manifest for a filesystem source (``acl.toml`` at the root of the ingested folder).

Inheritance: a file takes ``allow`` from its own entry if it has one, else from the nearest
folder entry above it that sets ``allow``; ``deny`` accumulates from every folder above it and
its own entry. A file that no entry covers is private (fail closed).

Fail closed on mistakes, too: a manifest is read strictly and every problem is collected, so the
job that reads it fails before any write with all of them listed (``ManifestError``):

- TOML that does not parse; a key other than ``tenant``, ``folders``, ``files`` at the top or
  ``allow``, ``deny`` in an entry (with the nearest valid key named);
- a principal that breaks the grammar (``core.types.principal_problem``), or an allow/deny that
  is not a list of strings;
- an entry path that is absolute, climbs out with ``..``, or is listed twice;
- (``problems``, against the folder's listing) a ``files`` entry that matches no file, a
  ``folders`` entry that matches no folder, each with the nearest existing path named, and a
  ``tenant`` that is not the deployment's.

A typo in a path therefore never silently leaves a file with its folder's broader allow list.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from core.errors import ConfigError
from core.types import Acl, principal_problem

MANIFEST_NAME = "acl.toml"
TOP_KEYS = ("tenant", "folders", "files")
ENTRY_KEYS = ("allow", "deny")


class ManifestError(ConfigError):
    """An ``acl.toml`` that cannot be trusted; ``problems`` lists every one found."""

    code = "manifest_invalid"
    status = 422

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        # One problem per line: the CLI prints each as its own error line.
        super().__init__(f"{path}: {n} problem{'s' if n != 1 else ''}, nothing was written:\n"
                         + "\n".join(f"  {p}" for p in self.problems))


@dataclass(frozen=True)
class _Entry:
    allow: tuple[str, ...] | None
    deny: tuple[str, ...]


@dataclass(frozen=True)
class AclManifest:
    tenant: str | None
    folders: dict[str, _Entry]
    files: dict[str, _Entry]
    path: Path | None = None

    @classmethod
    def empty(cls) -> AclManifest:
        return cls(None, {}, {})

    @classmethod
    def load(cls, root: Path) -> AclManifest:
        """The manifest under ``root`` (empty when there is none); ``ManifestError`` listing every
        syntax, key and principal problem otherwise."""
        manifest, problems = cls.parse(root)
        if problems:
            raise ManifestError(root / MANIFEST_NAME, problems)
        return manifest

    @classmethod
    def parse(cls, root: Path) -> tuple[AclManifest, list[str]]:
        """The manifest and every problem found reading it (no exception for content problems)."""
        path = root / MANIFEST_NAME
        if not path.exists():
            return cls.empty(), []
        try:
            data = tomllib.loads(path.read_text("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            return cls.empty(), [f"not valid TOML: {exc}"]
        problems: list[str] = []
        for key in data:
            if key not in TOP_KEYS:
                problems.append(f"unknown key {key!r}{_did_you_mean(key, TOP_KEYS)}")
        tenant = data.get("tenant")
        if tenant is not None and (not isinstance(tenant, str) or not tenant):
            problems.append("'tenant' must be a non-empty string")
            tenant = None
        tables: dict[str, dict[str, _Entry]] = {}
        for section in ("folders", "files"):
            raw = data.get(section, {})
            tables[section] = {}
            if not isinstance(raw, dict):
                problems.append(f"'{section}' must be a table of entries")
                continue
            for key, value in raw.items():
                label = f"[{section}.{_quote(key)}]"
                norm = _norm(key)
                if norm is None:
                    problems.append(f"{label}: the path must be relative and stay inside the folder")
                    continue
                if norm in tables[section]:
                    problems.append(f"{label}: the same path is listed twice")
                    continue
                # An invalid entry still takes part in the path checks (its problems are listed
                # anyway, and a manifest with problems is never used).
                tables[section][norm] = _entry(label, value, problems) or _Entry(None, ())
        return cls(tenant if isinstance(tenant, str) else None, tables["folders"], tables["files"], path), problems

    def problems(self, files: Iterable[str], folders: Iterable[str], tenant: str | None) -> list[str]:
        """What is wrong with this manifest for a folder holding ``files`` and ``folders``
        (POSIX paths relative to the root) in a deployment of ``tenant`` (None: not checked)."""
        file_set, folder_set = set(files), set(folders) | {"."}
        out: list[str] = []
        if tenant is not None and self.tenant is not None and self.tenant != tenant:
            out.append(f"tenant {self.tenant!r} is not this deployment's tenant {tenant!r}")
        for key in self.files:
            if key in file_set:
                continue
            if key in folder_set:
                out.append(f'[files."{key}"] names a folder: use [folders."{key}"]')
            else:
                out.append(f'[files."{key}"] matches no file{_nearest(key, file_set)}')
        for key in self.folders:
            if key in folder_set:
                continue
            if key in file_set:
                out.append(f'[folders."{key}"] names a file: use [files."{key}"]')
            else:
                out.append(f'[folders."{key}"] matches no folder{_nearest(key, folder_set - {"."})}')
        return out

    def acl_for(self, rel_path: str) -> Acl:
        rel = PurePosixPath(_norm(rel_path) or rel_path)
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


def _norm(p: str) -> str | None:
    """The entry path in canonical form (``.`` for the root); None if it could leave the root."""
    if p.startswith("/") or "\\" in p:
        return None
    parts = [x for x in p.split("/") if x not in ("", ".")]
    if any(x == ".." for x in parts):
        return None
    return "/".join(parts) if parts else "."


def _quote(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _did_you_mean(key: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else f" (expected one of {', '.join(options)})"


def _nearest(key: str, existing: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(existing), n=1, cutoff=0.0)
    return f"; nearest existing path: {close[0]!r}" if close else " (the folder holds none)"


def _entry(label: str, value: Any, problems: list[str]) -> _Entry | None:
    if not isinstance(value, dict):
        problems.append(f"{label}: an entry is a table with 'allow' and/or 'deny' lists")
        return None
    ok = True
    for k in value:
        if k not in ENTRY_KEYS:
            problems.append(f"{label}: unknown key {k!r}{_did_you_mean(k, ENTRY_KEYS)}")
            ok = False
    lists: dict[str, tuple[str, ...]] = {}
    for k in ENTRY_KEYS:
        if k not in value:
            continue
        items = value[k]
        if not isinstance(items, list):
            problems.append(f"{label}: '{k}' must be a list of principals")
            ok = False
            continue
        for p in items:
            problem = principal_problem(p)
            if problem is not None:
                problems.append(f"{label} {k}: {problem}")
                ok = False
        lists[k] = tuple(p for p in items if isinstance(p, str))
    if not ok:
        return None
    return _Entry(lists.get("allow"), lists.get("deny", ()))
