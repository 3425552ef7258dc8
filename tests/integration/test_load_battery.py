"""Fast versions of ``battery.load`` and ``battery.restart``: a live server over a small bench
index, mixed principals, every answer ACL-checked against the oracle, counts exact, and the same
answers after a SIGTERM and a SIGKILL restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from battery import restart
from battery.loadgen import PERSONAS, Target, oracle_count, query_texts, run_load, tokens
from bench.corpus import _seed
from bench.engine import build, index_path
from bench.server import start_server
from retrieval.bm25 import Bm25Encoder
from tests.conftest import DATASETS, free_port

pytestmark = pytest.mark.slow
CHUNKS = 3000


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("var")
    docs = [json.loads(line) for line in (DATASETS / "scifact" / "corpus.jsonl").open()][:300]
    vecs = np.random.default_rng(0).normal(size=(len(docs), 384)).astype(np.float32)
    seed = _seed([f"{d['title']}\n{d['text']}" for d in docs], vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    build(index_path(data, CHUNKS), seed, CHUNKS, Bm25Encoder())
    return data


@pytest.fixture(autouse=True)
def hash_embedder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The servers are subprocesses: settings travel by environment. ACLs are the point, not ranking.
    monkeypatch.setenv("CLEARANCE_EMBEDDER__KIND", "hash")
    monkeypatch.setenv("BATTERY_RESULTS_DIR", str(tmp_path / "results"))


def test_oracle_counts_match_the_share_each_group_sees() -> None:
    counts = {p.name: oracle_count(100_000, p) for p in PERSONAS if not p.forged}
    assert counts["no-groups"] == 0
    assert 800 < counts["vis01"] < 1200 and 9_000 < counts["vis10"] < 11_000
    assert counts["denied"] < counts["vis95"]  # the deny entries bite
    assert counts["two-groups"] == counts["vis50"]  # vis01 is a subset of vis50


def test_load_answers_are_all_entitled(bench_data: Path) -> None:
    d = bench_data / "bench" / f"n{CHUNKS}"
    port = free_port()
    proc = start_server(d, port)
    try:
        tally, wall = asyncio.run(run_load(Target(f"http://127.0.0.1:{port}"), tokens(d), query_texts(DATASETS / "scifact", 50),
                                           n_chunks=CHUNKS, concurrency=8, duration_s=8, count_every=10))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    f = tally.figures(wall)
    assert f["leaks"] == 0 and f["count_mismatches"] == 0 and f["errors"] == 0, tally.violations[:5]
    assert f["hits_acl_checked"] > 0 and f["counts_checked"] > 0
    assert f["forged_tokens_sent"] > 0 and f["forged_rejected_401"] == f["forged_tokens_sent"]


def test_restart_under_load_gives_the_same_answers(bench_data: Path, tmp_path: Path) -> None:
    rc = restart.main(["--chunks", str(CHUNKS), "--data-dir", str(bench_data), "--phase-s", "4", "--concurrency", "4",
                       "--port", str(free_port())])
    result = json.loads((tmp_path / "results" / "restart.json").read_text())
    assert rc == 0, result["violations"][:5]
    assert [r["signal"] for r in result["figures"]["restarts"]] == ["SIGTERM", "SIGKILL"]
    assert all(r["probes"] > 0 and r["probes_differing"] == 0 for r in result["figures"]["restarts"])
    assert result["figures"]["leaks"] == 0 and result["figures"]["hits_acl_checked"] > 0
