"""Concurrent writers of one document: a content PUT racing an ACL PATCH (and a delete) must
leave the index holding exactly the catalog's ACL, never a mix, on SQLite and PostgreSQL.

Before ``Catalog.write_lock`` about 10 % of such pairs left a revoked group reading the new
chunks (found by the leak duel, ``battery.leak_duel``)."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from app.services import Services, build_services
from core.types import Acl, SourceDocument
from retrieval.embedder import HashEmbedder
from tests.conftest import make_settings
from tests.contract.test_catalog import PG
from tests.integration.test_ingest_sync import check_consistent

LONG = "\n\n".join(f"Paragraph {i} about the revenue forecast and the budget. " * 25 for i in range(6))


@pytest.fixture(params=["sqlite", "postgresql"])
def services(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    overrides: dict[str, object] = {}
    schema = f"t_{uuid.uuid4().hex[:10]}"
    if request.param == "postgresql":
        with create_engine(PG).begin() as c:
            c.execute(text(f"create schema {schema}"))
        overrides["database_url"] = SecretStr(f"{PG}?options=-csearch_path%3D{schema}")
    s = build_services(make_settings(tmp_path, **overrides), embedder=HashEmbedder(64))
    yield s
    s.close()
    if request.param == "postgresql":
        with create_engine(PG).begin() as c:
            c.execute(text(f"drop schema {schema} cascade"))


def doc(text_: str, *allow: str) -> SourceDocument:
    return SourceDocument("push", "race", "push://race", "race.txt", text_.encode(), Acl(frozenset(allow)),
                          datetime(2026, 1, 1, tzinfo=UTC))


def test_put_racing_patch_and_delete_leaves_catalog_and_index_agreeing(services: Services) -> None:
    ing = services.ingestor
    rng = random.Random(7)
    key = ing.doc_key("push", "race")
    for trial in range(30):
        ing.apply(doc(f"short note {trial}", "group:a"))
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def put() -> None:
            barrier.wait()
            ing.apply(doc(f"{LONG} {trial}", "group:a"))

        def patch() -> None:
            barrier.wait()
            threading.Event().wait(rng.uniform(0, 0.03))
            if trial % 5 == 4:
                ing.delete("push", "race")
            else:
                ing.set_acl(key, Acl(frozenset({"group:b"})))

        threads = [threading.Thread(target=lambda f=f: _run(f, errors)) for f in (put, patch)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not [e for e in errors if "unknown document" not in str(e)], errors
        check_consistent(services)  # every chunk's ACL is the catalog's; no lost, orphaned or duplicated chunk
        row = services.catalog.get(key)
        if row is not None:
            assert row.state == "indexed" and row.ids


def _run(f, errors: list[BaseException]) -> None:  # noqa: ANN001
    try:
        f()
    except BaseException as exc:  # noqa: BLE001 - collected and asserted on in the test thread
        errors.append(exc)
