"""Bounded, streaming ingestion (``ingest.batch_chunks``/``batch_bytes``) and job states that
survive kills (``interrupted``).

- A sync commits document by document: the progress callback sees each document's catalog row
  indexed before the job ends; embedding and index writes never exceed ``batch_chunks`` chunks
  (a document with more is written alone, embedded ``batch_chunks`` at a time); a batch is cut at
  ``batch_bytes`` of content.
- A document over the caps (``max_chunks_per_document``, ``max_file_bytes``) is refused with its
  code, never held or written.
- A sync killed with SIGKILL leaves its job ``running`` with its owner; the next sync (or worker,
  or server) marks it ``interrupted`` with the time it noticed. Jobs of live owners, other hosts
  and queued jobs are left alone; a reused pid (another start time) counts as dead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from app.services import Services, build_services
from core.settings import IngestSettings
from ingest.sources import FilesystemSource
from store.catalog import Catalog, JobOwner, JobState
from store.status import job_dicts
from tests.api.test_push import CountingEmbedder
from tests.conftest import REPO, make_settings
from tests.integration.test_ingest_sync import check_consistent


def _para(i: int, n: int) -> str:
    return "\n\n".join(f"Section {i}.{k}: the revenue forecast paragraph number {k} of file {i}. " * 4 for k in range(n))


def _tree(root: Path, files: int, paras: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "acl.toml").write_text('[folders."."]\nallow = ["tenant:acme"]\n')
    for i in range(files):
        (root / f"d{i:02d}.txt").write_text(_para(i, paras))


class SliceEmbedder(CountingEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def embed(self, texts):  # type: ignore[no-untyped-def]
        self.calls.append(len(texts))
        return super().embed(texts)


def _services(tmp_path: Path, **ingest: Any) -> tuple[Services, SliceEmbedder]:
    emb = SliceEmbedder()
    settings = make_settings(tmp_path, ingest=IngestSettings(chunk_chars=300, chunk_overlap_chars=0,
                                                             min_chunk_chars=50, **ingest))
    return build_services(settings, embedder=emb), emb


def test_sync_commits_each_document_as_its_slice_is_written(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    _tree(root, 12, 6)
    services, emb = _services(tmp_path, batch_chunks=8)
    writes: list[int] = []
    real_write = services.ingestor.writer.write

    def spy(ws):  # type: ignore[no-untyped-def]
        writes.append(sum(len(w.chunks) for w in ws))
        return real_write(ws)

    services.ingestor.writer.write = spy  # type: ignore[method-assign]
    seen: list[tuple[int, int, str]] = []  # (rows indexed, job items saved, job state) at each callback

    def progress(key: str, outcome: str) -> None:
        row = services.catalog.get(key)
        assert outcome == "added" and row is not None and row.state == "indexed" and row.ids, key
        indexed = sum(1 for r in services.catalog.documents() if r.ids)
        job = services.catalog.jobs("docs", limit=1)[0]
        seen.append((indexed, len(services.catalog.job_items(int(job.id or 0))), job.state))

    try:
        report = services.ingestor.sync(FilesystemSource(root, "docs"), progress=progress)
        assert report.counts == {"added": 12} and report.chunks > 24
        assert len(seen) == 12
        assert seen[0][0] < 12 and seen[0][2] == JobState.RUNNING  # committed while the job still ran
        assert [n for n, _, _ in seen] == sorted(n for n, _, _ in seen)
        assert len(writes) >= report.chunks // 8 and len(writes) > 1  # sliced writes
        assert all(n <= 8 for n in emb.calls), emb.calls
        assert services.catalog.jobs("docs", limit=1)[0].state == JobState.DONE
        check_consistent(services)
    finally:
        services.close()


def test_slices_bound_chunks_and_batches_bound_bytes(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    _tree(root, 6, 3)
    (root / "big.txt").write_text(_para(99, 30))  # one document over batch_chunks: a slice of its own
    services, emb = _services(tmp_path, batch_chunks=5, batch_bytes=4000)
    writes: list[list[int]] = []
    batches: list[int] = []
    real_write, real_apply = services.ingestor.writer.write, services.ingestor.apply_many

    def spy_write(ws):  # type: ignore[no-untyped-def]
        writes.append([len(w.chunks) for w in ws])
        return real_write(ws)

    def spy_apply(docs, **kw):  # type: ignore[no-untyped-def]
        batches.append(len(docs))
        return real_apply(docs, **kw)

    services.ingestor.writer.write = spy_write  # type: ignore[method-assign]
    services.ingestor.apply_many = spy_apply  # type: ignore[method-assign]
    try:
        report = services.ingestor.sync(FilesystemSource(root, "docs"))
        assert report.counts == {"added": 7}
        assert len(batches) > 1 and sum(batches) == 7  # cut by bytes (~2.7 kB a file), not by batch_docs
        for w in writes:
            assert sum(w) <= 5 or len(w) == 1, writes  # only a lone document may exceed the slice
        assert any(len(w) == 1 and w[0] > 5 for w in writes)
        assert all(n <= 5 for n in emb.calls), emb.calls  # the big one is embedded 5 at a time
        check_consistent(services)
    finally:
        services.close()


def test_documents_over_the_caps_are_refused_not_held(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    _tree(root, 3, 2)
    (root / "amplified.txt").write_text(_para(7, 40))
    (root / "huge.txt").write_text("x " * 30_000)
    services, emb = _services(tmp_path, batch_chunks=4, max_chunks_per_document=10, max_file_bytes=20_000)
    written: list[str] = []
    real_write = services.ingestor.writer.write

    def spy(ws):  # type: ignore[no-untyped-def]
        written.extend(w.key for w in ws)
        return real_write(ws)

    services.ingestor.writer.write = spy  # type: ignore[method-assign]
    try:
        src = FilesystemSource(root, "docs")
        report = services.ingestor.sync(src)
        assert [(x.rel, x.code) for x in src.skipped] == [("huge.txt", "too_large")]  # refused unread
        codes = {d.rsplit("/", 1)[1]: c for d, c, _ in report.errors}
        assert codes == {"amplified.txt": "too_many_chunks", "huge.txt": "too_large"}
        assert report.counts == {"added": 3, "failed": 2}
        assert not any(k.endswith(("amplified.txt", "huge.txt")) for k in written)
        assert all(n <= 4 for n in emb.calls)
        check_consistent(services)
    finally:
        services.close()


# -- interrupted jobs ---------------------------------------------------------------------------


def _job_state(db: Path, job_id: int) -> tuple[str, Any, int | None]:
    cat = Catalog(f"sqlite:///{db}")
    try:
        job = next(j for j in cat.jobs(limit=100) if j.id == job_id)
        return job.state, job.finished_at, job.owner_pid
    finally:
        cat.close()


def test_sync_killed_with_sigkill_is_marked_interrupted_by_the_next_run(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    _tree(root, 40, 4)
    db = tmp_path / "var" / "catalog.sqlite3"
    env = {**os.environ, "CLEARANCE_STORAGE__DATA_DIR": str(tmp_path / "var"), "CLEARANCE_EMBEDDER__KIND": "hash",
           "CLEARANCE_INGEST__BATCH_CHUNKS": "2"}
    cmd = [sys.executable, "-c", "from cli.main import run; run()", "ingest", str(root), "--source", "docs"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def indexed() -> int:
        cat = Catalog(f"sqlite:///{db}")
        try:
            return sum(1 for r in cat.documents() if r.state == "indexed" and r.content_hash)
        finally:
            cat.close()

    deadline = time.time() + 180
    while proc.poll() is None and time.time() < deadline:
        if db.exists() and indexed() > 0:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sync ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = indexed()
    assert 0 < committed < 40, committed  # progressive commits: some documents survived the kill
    cat = Catalog(f"sqlite:///{db}")
    try:
        job_id = int(cat.jobs("docs", limit=1)[0].id or 0)
    finally:
        cat.close()
    state, finished, owner = _job_state(db, job_id)
    assert (state, finished, owner) == ("running", None, proc.pid)

    services = build_services(make_settings(tmp_path))
    try:
        report = services.ingestor.sync(FilesystemSource(root, "docs"))
        counts = report.counts
        assert counts.get("added", 0) + counts.get("unchanged", 0) + counts.get("updated", 0) == 40, counts
        # what the kill interrupted (rows left ``writing``, recovered) is one slice at most
        assert counts.get("updated", 0) <= 2 and counts.get("unchanged", 0) >= committed - 2, counts
        state, finished, _ = _job_state(db, job_id)
        assert state == JobState.INTERRUPTED and finished is not None
        shown = {j["id"]: j for j in job_dicts(services.catalog, source="docs")}
        assert shown[job_id]["state"] == "interrupted" and shown[job_id]["finished_at"]
        assert shown[report.job_id]["state"] == "done"
        check_consistent(services)
    finally:
        services.close()


@pytest.fixture
def catalog(tmp_path: Path):  # noqa: ANN201
    cat = Catalog(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    yield cat
    cat.close()


def test_only_jobs_whose_owner_is_gone_are_interrupted(catalog: Catalog) -> None:
    me = JobOwner.current()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    jobs = {
        "alive": catalog.start_job("s", owner=me),
        "dead_pid": catalog.start_job("s", owner=JobOwner(me.host, dead.pid, None)),
        "reused_pid": catalog.start_job("s", owner=JobOwner(me.host, me.pid, (me.started or 0) - 3600)),
        "other_host": catalog.start_job("s", owner=JobOwner(me.host + "-elsewhere", dead.pid, None)),
        "queued": catalog.start_job("s", kind="queued"),
    }
    ended = catalog.start_job("s", owner=JobOwner(me.host, dead.pid, None))
    ended.state = JobState.DONE
    catalog.save_job(ended, [])
    got = catalog.interrupt_orphaned_jobs()
    assert sorted(got) == sorted(int(jobs[k].id or 0) for k in ("dead_pid", "reused_pid"))
    states = {j.id: j.state for j in catalog.jobs(limit=20)}
    assert {k: states[j.id] for k, j in jobs.items()} == {
        "alive": "running", "dead_pid": "interrupted", "reused_pid": "interrupted", "other_host": "running",
        "queued": "running"}
    assert states[ended.id] == "done"
    assert catalog.interrupt_orphaned_jobs() == []  # idempotent
