"""The evaluation harness on a small slice of SciFact: the production pipeline end to end, with
the leak check that must be exactly 0 (so a leak fails CI), the stale check under max_age, the
reports, and the regression gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import InvalidRequestError
from eval import report as reports
from eval.beir import load_beir, load_query_jsonl
from eval.harness import EvalConfig, run
from tests.conftest import DATASETS

SCIFACT = DATASETS / "scifact"
pytestmark = pytest.mark.skipif(not SCIFACT.exists(), reason="../shared/datasets is not beside the repo")


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("eval")
    ds = load_beir(SCIFACT, max_docs=250, max_queries=25)
    cfg = EvalConfig(work_dir=tmp / "work", cache_path=tmp / "cache.sqlite3", embedder="hash")
    return run(ds, cfg)


def test_no_leak_and_no_stale_chunk(result: dict) -> None:
    ent, fresh = result["entitlements"], result["freshness"]
    assert ent["checks"] > 1000 and ent["leaks"] == 0
    assert fresh["checks"] > 100 and fresh["stale_returned"] == 0
    assert len(ent["personas"]) >= 5


def test_metrics_are_measured_per_mode(result: dict) -> None:
    assert set(result["modes"]) == {"bm25", "dense", "hybrid"}
    for v in result["modes"].values():
        assert 0.0 <= v["metrics"]["ndcg@10"] <= 1.0 and len(v["per_query"]) == result["queries"]
    # judged documents are all in the slice, so BM25 finds most of them
    assert result["modes"]["bm25"]["metrics"]["recall@100"] > 0.8
    assert {(s["a"], s["b"]) for s in result["significance"]} == {("bm25", "dense"), ("bm25", "hybrid"), ("dense", "hybrid")}


def test_prefilter_never_loses_to_postfilter(result: dict) -> None:
    ent = result["entitlements"]
    assert ent["prefilter"]["recall@100"] >= ent["postfilter_retrieve10"]["recall@100"]


def test_reports_and_regression_gate(result: dict, tmp_path: Path) -> None:
    paths = reports.write(result, tmp_path)
    assert paths["json"].exists() and "Leaks: **0**" in paths["md"].read_text()
    assert paths["png_modes"].stat().st_size > 1000
    assert "data:image/png;base64," in paths["html"].read_text()  # one self-contained page
    head = reports.headline(result)
    assert reports.check(result, head, 0.0) == []
    better = json.loads(json.dumps(head))
    better["modes"]["hybrid"]["ndcg@10"] += 0.05
    assert any("hybrid ndcg@10" in p for p in reports.check(result, better, 0.01))
    leaky = json.loads(json.dumps(head))
    leaky["entitlements"]["leaks"] = 1
    assert any("leaks" in p for p in reports.check(leaky, head, 0.0))


def test_production_queries_jsonl(tmp_path: Path) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text('{"id": "a", "query": "vitamin d", "relevant": {"123": 2, "9": 0}}\n\n{"query": "x", "relevant": {}}\n')
    queries, qrels = load_query_jsonl(f)
    assert queries == {"a": "vitamin d", "3": "x"} and qrels == {"a": {"123": 2}, "3": {}}
    f.write_text('{"query": "no judgments"}\n')
    with pytest.raises(InvalidRequestError, match="expected"):
        load_query_jsonl(f)
