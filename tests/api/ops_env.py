"""Shared setup for the operations tests (audit, metrics, health, degraded, admin): the real
app behind uvicorn on loopback, a real Edge index and SQLite catalog in a temp dir, the hash
embedder, dev-issuer tokens."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from app.services import Services, build_services
from core.settings import Settings
from retrieval.embedder import Embedder, HashEmbedder
from testkit.sources import register_source
from tests.conftest import LiveServer, make_settings

HTTP = httpx.Client(timeout=60)  # the first parse in a process loads the parsers

SEARCH = "clearance:search"
INGEST = "clearance:ingest"
ADMIN = "clearance:admin"


@dataclass
class Env:
    settings: Settings
    services: Services
    server: LiveServer

    @property
    def url(self) -> str:
        return self.server.url

    def auth(self, sub: str, groups: Sequence[str] = (), scopes: Sequence[str] = (SEARCH,)) -> dict[str, str]:
        assert self.services.auth.dev is not None
        return {"authorization": f"Bearer {self.services.auth.dev.mint(sub, groups=list(groups), scopes=list(scopes))}"}

    def push(self, source: str, doc_id: str, content: str, allow: Sequence[str], filename: str | None = None) -> dict:
        register_source(self.services, source)  # a push source written by user:etl (no-op once it exists)
        r = HTTP.put(f"{self.url}/v1/sources/{source}/documents/{doc_id}", headers=self.auth("etl", scopes=[INGEST]),
                     json={"filename": filename or f"{doc_id.rsplit('/', 1)[-1]}.txt", "content": content,
                           "acl": {"allow": list(allow)}})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def search(self, headers: dict[str, str], query: str, **extra: Any) -> httpx.Response:
        return HTTP.post(f"{self.url}/v1/search", json={"query": query, "top_k": 50, **extra}, headers=headers)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of ``/metrics`` keyed by (sample name, sorted labels)."""
        r = HTTP.get(f"{self.url}/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def doc_ids(resp: httpx.Response) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {h["provenance"]["doc_id"] for h in resp.json()["hits"]}


@contextmanager
def running(tmp_path: Path, *, embedder: Embedder | None = None, **overrides: object) -> Iterator[Env]:
    settings = make_settings(tmp_path, **overrides)
    services = build_services(settings, embedder=embedder or HashEmbedder(64))
    try:
        with LiveServer(create_app(settings, services)) as server:
            yield Env(settings, services, server)
    finally:
        try:
            services.close()
        except Exception:  # a test may have broken the index or the catalog on purpose
            pass


def break_sqlite_catalog(services: Services) -> None:
    """A real outage: the database file is gone and its path cannot be opened any more."""
    url = services.settings.catalog_url()
    assert url.startswith("sqlite:///")
    path = Path(url.removeprefix("sqlite:///"))
    services.catalog.engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        p = path.with_name(path.name + suffix)
        if p.exists():
            p.rename(p.with_name(p.name + ".moved"))
    path.mkdir()  # sqlite3 cannot open a directory: every new connection fails


def repair_sqlite_catalog(services: Services) -> None:
    url = services.settings.catalog_url()
    path = Path(url.removeprefix("sqlite:///"))
    shutil.rmtree(path)
    for suffix in ("", "-wal", "-shm"):
        moved = path.with_name(path.name + suffix + ".moved")
        if moved.exists():
            moved.rename(path.with_name(path.name + suffix))
