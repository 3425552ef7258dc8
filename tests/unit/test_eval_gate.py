"""The gate refuses mis-comparisons (issue 17): another dataset, other counts, leak checks the
baseline had and the run skipped; flags a stale baseline; the label-free gate on live reports."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from eval import report as reports
from eval.gate import live_gate, refusals

BASELINES = Path(__file__).resolve().parents[2] / "eval" / "baselines"


def _load(name: str) -> dict[str, Any]:
    return json.loads((BASELINES / f"{name}.json").read_text())


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("CLEARANCE_STORAGE__DATA_DIR", str(tmp_path / "var"))
    return CliRunner()


def _check(cli: CliRunner, tmp: Path, run: dict[str, Any], base: dict[str, Any], *extra: str) -> Any:
    from cli.main import app

    (tmp / "run.json").write_text(json.dumps(run))
    (tmp / "base.json").write_text(json.dumps(base))
    return cli.invoke(app, ["eval", "check", "--report", str(tmp / "run.json"), "--baseline", str(tmp / "base.json"), *extra])


def test_another_dataset_is_refused(cli: CliRunner, tmp_path: Path) -> None:
    res = _check(cli, tmp_path, _load("med"), _load("cisi"))
    assert res.exit_code == 1 and "refused: different datasets: run 'med', baseline 'cisi'" in res.output
    assert "no regression" not in res.output


def test_other_counts_are_refused(cli: CliRunner, tmp_path: Path) -> None:
    sub = _load("scifact")
    sub["queries"] = 25
    res = _check(cli, tmp_path, sub, _load("scifact"))
    assert res.exit_code == 1 and "different queries count: run 25, baseline 300" in res.output


def test_skipped_leak_checks_are_refused(cli: CliRunner, tmp_path: Path) -> None:
    no_personas = _load("scifact")
    del no_personas["entitlements"]
    res = _check(cli, tmp_path, no_personas, _load("scifact"))
    checked = _load("scifact")["entitlements"]["checks"]
    assert checked > 0 and res.exit_code == 1
    assert f"skipped the leak checks its baseline had ({checked} chunks checked there, none here)" in res.output
    zero = _load("scifact")
    zero["entitlements"]["checks"] = 0
    assert any("skipped the leak checks" in r for r in refusals(zero, _load("scifact")))
    assert any("0 returned chunks" in p for p in reports.check(zero, {"modes": {}}, 0.0))


def test_identity_hash_mismatch_is_refused() -> None:
    a, b = _load("scifact"), _load("scifact")
    a["identity"], b["identity"] = "a" * 64, "b" * 64
    assert any("identity aaaaaaaaaaaa (run) vs bbbbbbbbbbbb" in r for r in refusals(a, b))


def test_same_run_passes_and_a_better_run_flags_a_stale_baseline(cli: CliRunner, tmp_path: Path) -> None:
    res = _check(cli, tmp_path, _load("scifact"), _load("scifact"))
    assert res.exit_code == 0 and "no regression" in res.output
    better = _load("scifact")
    better["modes"]["hybrid"]["ndcg@10"] += 0.05
    res = _check(cli, tmp_path, better, _load("scifact"))
    assert res.exit_code == 0 and "note: stale baseline: hybrid ndcg@10" in res.output


def _live(rbo_lists: dict[str, list[str]], **over: Any) -> dict[str, Any]:
    rep: dict[str, Any] = {
        "kind": "live", "dataset": "live:acme",
        "meta": {"identity": {"hash": "f" * 64}, "counts": {"documents": 3, "personas": 1, "queries": len(rbo_lists)}},
        "leak_checks": {"checked_chunks": 12, "leaks": 0},
        "overall": {"zero_result_rate": 0.0, "known_item": {"mrr@10": 0.8}},
        "queries": [{"key": k, "top10": v} for k, v in rbo_lists.items()],
    }
    for k, v in over.items():
        rep[k] = v
    return rep


def test_live_gate() -> None:
    base = _live({"p|q1": ["a", "b", "c"], "p|q2": ["b", "c"]})
    assert live_gate(copy.deepcopy(base), base).passed
    moved = _live({"p|q1": ["c", "b", "a"], "p|q2": ["x"]})
    g = live_gate(moved, base)
    assert not g.passed and any("RBO@10" in p and "most changed: p|q2" in p for p in g.problems)
    leaky = _live({"p|q1": ["a", "b", "c"], "p|q2": ["b", "c"]}, leak_checks={"checked_chunks": 12, "leaks": 1})
    assert any(p.startswith("leaks: 1 of 12") for p in live_gate(leaky, base).problems)
    blind = _live({"p|q1": ["a", "b", "c"], "p|q2": ["b", "c"]}, leak_checks={"checked_chunks": 0, "leaks": 0})
    assert any("skipped the leak checks" in r for r in live_gate(blind, base).refusals)
    assert any("0 chunks" in p for p in live_gate(blind, None).problems)
    fewer = _live({"p|q1": ["a", "b", "c"]})
    assert any("different queries count" in r for r in live_gate(fewer, base).refusals)
    other = copy.deepcopy(base)
    other["meta"]["identity"]["hash"] = "e" * 64
    assert any("different dataset or query set" in r for r in live_gate(other, base).refusals)
    worse_zero = _live({"p|q1": ["a", "b", "c"], "p|q2": ["b", "c"]}, overall={"zero_result_rate": 0.5, "known_item": {"mrr@10": 0.8}})
    assert any("zero-result rate 0.5000 > baseline" in p for p in live_gate(worse_zero, base).problems)
    better = _live({"p|q1": ["a", "b", "c"], "p|q2": ["b", "c"]}, overall={"zero_result_rate": 0.0, "known_item": {"mrr@10": 0.95}})
    g = live_gate(better, base)
    assert g.passed and any(n.startswith("stale baseline: known-item MRR@10 0.9500") for n in g.notes)
    assert refusals(base, _load("scifact")) == ["cannot compare a live run with a labelled baseline"]
