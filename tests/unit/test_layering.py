"""Structural invariants the import-linter contract cannot state:

- the security path (token → principals → scope → filter) is typed without ``Any``: a claim or
  a principal is never silently an unchecked value;
- callers' reads go through the audited service only: no web, CLI or MCP module touches the
  unaudited search the composition root keeps for the offline evaluation harness.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

SECURITY_PATH = ("auth/validator.py", "auth/principals.py", "auth/authenticator.py", "core/types.py",
                 "retrieval/scope_filter.py", "retrieval/engine_filter.py", "retrieval/payload.py")


def _names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    out |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    out |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    return out


def test_no_any_on_the_security_path() -> None:
    assert [p for p in SECURITY_PATH if "Any" in _names(REPO / p)] == []


def test_no_caller_facing_module_reaches_the_unaudited_search() -> None:
    offenders = [str(p.relative_to(REPO)) for pkg in ("api", "cli", "client") for p in (REPO / pkg).rglob("*.py")
                 if "search_unaudited" in _names(p)]
    assert offenders == []
