"""Queued ingestion: concurrent workers never hold the same item (SQLite and PostgreSQL),
leases expire so a dead worker's items are taken over, and the worker pipeline ends with the
catalog and the index in agreement."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from app.services import build_services
from ingest.worker import enqueue_folder, run_worker
from store.catalog import Catalog
from store.queue import Enqueued, WorkQueue
from tests.conftest import make_settings
from tests.contract.test_catalog import catalog  # noqa: F401  (the SQLite + PostgreSQL fixture)
from tests.integration.test_ingest_sync import check_consistent, visible, write_tree


def test_concurrent_claims_are_disjoint_and_complete(catalog: Catalog) -> None:  # noqa: F811
    queue = WorkQueue(catalog)
    queue.enqueue(1, "s", [Enqueued("upsert", f"d{i}") for i in range(300)])
    claimed: dict[str, list[int]] = {}
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            rows = queue.claim(name, 7, lease_s=60)
            if not rows:
                return
            with lock:
                claimed.setdefault(name, []).extend(int(r.id or 0) for r in rows)
            for r in rows:
                assert queue.finish(r, outcome="added")

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in claimed.values() for i in ids]
    assert len(every) == len(set(every)) == 300, "an item was claimed twice or lost"
    assert len(claimed) > 1  # the work really was shared
    assert queue.counts() == {"done": 300}


def test_expired_lease_is_taken_over_and_the_slow_worker_loses(catalog: Catalog) -> None:  # noqa: F811
    queue = WorkQueue(catalog)
    queue.enqueue(1, "s", [Enqueued("upsert", "d0")])
    slow = queue.claim("slow", 1, lease_s=0.05)
    assert len(slow) == 1 and queue.claim("fast", 1, lease_s=60) == []
    time.sleep(0.2)
    fast = queue.claim("fast", 1, lease_s=60)
    assert [r.id for r in fast] == [slow[0].id]
    assert not queue.finish(slow[0], outcome="added"), "a worker that lost its lease must not record"
    assert queue.finish(fast[0], outcome="added")


def test_failing_item_is_retried_then_given_up(catalog: Catalog) -> None:  # noqa: F811
    queue = WorkQueue(catalog, max_attempts=2)
    queue.enqueue(1, "s", [Enqueued("upsert", "d0")])
    for _ in range(2):
        (row,) = queue.claim("w", 1, lease_s=60)
        queue.finish(row, error=("embed_failed", "model crashed"))
    assert queue.claim("w", 1, lease_s=60) == []
    assert queue.counts() == {"failed": 1}


def test_cli_enqueue_then_worker(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    root = tmp_path / "docs"
    write_tree(root, 3)
    env = {**os.environ, "CLEARANCE_STORAGE__DATA_DIR": str(tmp_path / "var"), "CLEARANCE_EMBEDDER__KIND": "hash"}
    cli = [sys.executable, "-c", "from cli.main import run; run()"]
    q = subprocess.run([*cli, "ingest", str(root), "--source", "docs", "--queue"], env=env, cwd=REPO, capture_output=True, text=True)
    assert q.returncode == 0 and "queued 6 documents" in q.stdout, q.stderr[-1000:]
    w = subprocess.run([*cli, "worker", "--once"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert w.returncode == 0 and "processed 6 items" in w.stdout, w.stderr[-1000:]
    services = build_services(make_settings(tmp_path))
    try:
        check_consistent(services)
        assert len(list(services.catalog.documents())) == 6
    finally:
        services.close()


def test_worker_ingests_a_queued_folder(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write_tree(root, 5)
    (root / "all" / "empty.txt").write_text("")
    services = build_services(make_settings(tmp_path))
    try:
        queue = WorkQueue(services.catalog)
        job = enqueue_folder(queue, "acme", root, "docs")
        assert queue.counts(job) == {"queued": 11}
        assert run_worker(services.ingestor, queue, "w1", batch=4, once=True) == 11
        assert queue.counts(job) == {"done": 10, "failed": 1}
        check_consistent(services)
        assert visible(services, "group:finance") >= {f"fin/f{i}.md" for i in range(5)}
        (root / "fin" / "f0.md").unlink()
        job2 = enqueue_folder(queue, "acme", root, "docs")
        run_worker(services.ingestor, queue, "w1", once=True)
        assert "fin/f0.md" not in visible(services, "group:finance")
        assert queue.counts(job2)["done"] == 10
        check_consistent(services)
    finally:
        services.close()
