"""Register sources for tests, benchmarks and the battery through the real registry
(``app.sources.SourceRegistry``), as the local operator, so every fixture write is audited and
authorized exactly like production: writes go only to registered sources, by their writers."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from auth.local import operator_entitlements

# The subject tests, benchmarks and the battery push with (``mint("etl", scopes=[INGEST])``).
ETL_WRITER = "user:etl"


def register_source(services: Any, name: str, *, kind: str = "push", writers: Iterable[str] = (ETL_WRITER,),
                    root: Path | str | None = None) -> None:
    """Create source ``name`` in ``services``' catalog (``services``: ``app.services.Services``);
    a no-op when it exists already."""
    if services.sources.get(name) is not None:
        return
    operator = operator_entitlements(services.settings.ingest.tenant, "testkit")
    services.sources.create(operator, name, kind, list(writers), str(root) if root is not None else None, local=True)


def register_sources(services: Any, names: Iterable[str], **kw: Any) -> None:
    for name in names:
        register_source(services, name, **kw)
