"""Issue 17's acceptance, reduced to run in `make test`: the README's worked example. The demo
corpus is ingested with `clearance ingest` into a temp data dir (real Edge index, real SQLite
catalog; the hash embedder keeps it fast), then `clearance eval run --live` evaluates it for the
demo's real users (eval/personas/demo.yaml, groups from demo/README.md) against the acl.toml
ACLs as the catalog holds them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from testkit import browser
from tests.conftest import DEMO, REPO

PERSONAS = REPO / "eval" / "personas" / "demo.yaml"
COMMITTED = REPO / "eval" / "baselines" / "demo-live-hash.json"
USERS = ("alice", "bob", "carol", "dave", "erin")
VISIBLE = {"alice": 15, "bob": 14, "carol": 15, "dave": 15, "erin": 9}  # demo/README.md, "Demo users"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, pytest.MonkeyPatch]]:
    tmp = tmp_path_factory.mktemp("live")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLEARANCE_STORAGE__DATA_DIR", str(tmp / "var"))
        mp.setenv("CLEARANCE_EMBEDDER__KIND", "hash")
        res = _cli("ingest", str(DEMO), "--source", "demo")
        assert res.exit_code == 0, res.output
        yield tmp, mp


def _cli(*args: str) -> Result:
    from cli.main import app

    return CliRunner().invoke(app, list(args))


def _live(out: Path, *extra: str) -> tuple[Result, dict[str, Any], Path]:
    res = _cli("eval", "run", "--live", "--personas", str(PERSONAS), "--out", str(out), *extra)
    reports = sorted(out.glob("live-*.json"))
    assert len(reports) == 1, res.output
    return res, json.loads(reports[0].read_text()), reports[0]


@pytest.fixture(scope="module")
def first(deployment: tuple[Path, pytest.MonkeyPatch]) -> tuple[Result, dict[str, Any], Path]:
    return _live(deployment[0] / "run1")


def test_every_returned_chunk_is_checked_and_none_leaks(first: tuple[Result, dict[str, Any], Path]) -> None:
    res, report, _ = first
    assert res.exit_code == 0, res.output
    checked = report["leak_checks"]["checked_chunks"]
    assert checked > 0 and report["leak_checks"]["leaks"] == 0
    assert f"leaks 0 in {checked} returned chunks checked" in res.output
    assert checked == sum(q["hits"] for q in report["queries"])
    assert report["meta"]["timings"]["top_k"] == 10 and report["meta"]["ranking"]["rrf_k"] == 30


def test_known_item_mrr_per_real_user(first: tuple[Result, dict[str, Any], Path]) -> None:
    res, report, _ = first
    assert list(report["personas"]) == list(USERS)
    for user in USERS:
        p = report["personas"][user]
        assert p["visible_documents"] == VISIBLE[user]
        assert p["known_item"]["queries"] > 0 and 0.0 < p["known_item"]["mrr@10"] <= 1.0
        assert re.search(rf"^{user}\s+queries\s+\d+\s+known-item MRR@10 0\.\d{{4}}", res.output, re.M)
    # known items come only from documents the user may see: erin never gets a finance query
    assert not any(q["known"] and "/finance/" in q["known"] for q in report["queries"] if q["persona"] == "erin")
    assert not any(q["known"] == "acme/demo/finance/board-pack.html" for q in report["queries"] if q["persona"] == "alice")
    assert set(report["kinds"]) == {"title", "sentence", "identifier"}


def test_html_report_is_self_contained(first: tuple[Result, dict[str, Any], Path]) -> None:
    _, _, path = first
    html = path.with_suffix(".html").read_text()
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert html.count("<svg") >= 2 and "Leaks: 0</strong>" in html
    assert not re.search(r"<(script|link|img)\b|\bsrc=|url\(", html)


def test_html_report_opens_in_chromium(first: tuple[Result, dict[str, Any], Path], tmp_path: Path) -> None:
    """The report renders in a real browser from file:// (no network, nothing external) and a
    screenshot of it is written."""
    _, report, path = first
    shot = tmp_path / "live-report.png"
    try:
        with browser.chromium() as b:
            page = b.new_page(viewport={"width": 1280, "height": 900})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.with_suffix(".html").as_uri())
            assert "Leaks: 0" in page.inner_text("body")
            assert page.locator("svg").count() >= 2
            page.screenshot(path=str(shot), full_page=True)
    except browser.BrowserUnavailable as exc:
        pytest.skip(str(exc))
    assert all(u.startswith("file://") for u in requests), requests
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width == 1280 and height >= 900


def test_committed_baseline_gate_passes(deployment: tuple[Path, pytest.MonkeyPatch]) -> None:
    """The demo's committed baseline (eval/baselines/demo-live-hash.json, made with this corpus,
    these personas and the hash embedder): an unchanged tree passes the label-free gate against
    it. Not 1.0: a fresh build of the index orders large groups of equal hash-embedder scores
    differently (the engine cuts tie groups longer than the candidate list before Clearance's id
    order applies), RBO 0.96 seen here; a rerun on the same index is 1.0 (test above). When a
    change to chunking or ranking is meant, regenerate it with the command in the README."""
    from eval.gate import RBO_MIN

    res, report, _ = _live(deployment[0] / "committed", "--baseline", str(COMMITTED))
    assert res.exit_code == 0, res.output
    assert report["gate"]["passed"] and report["stability"]["rbo_mean"] >= RBO_MIN, report["gate"]
    assert report["meta"]["identity"]["hash"] == json.loads(COMMITTED.read_text())["meta"]["identity"]["hash"]


def test_unchanged_rerun_passes_and_rrf_k_1_fails_the_gate(deployment: tuple[Path, pytest.MonkeyPatch],
                                                          first: tuple[Result, dict[str, Any], Path]) -> None:
    tmp = deployment[0]
    _, base, base_path = first
    res, again, again_path = _live(tmp / "run2", "--baseline", str(base_path))
    assert res.exit_code == 0, res.output
    # 1.0 but for rare equal scores at the edge of the engine's candidate list (0.9998 seen here)
    assert again["stability"]["rbo_mean"] >= 0.99 and again["gate"]["passed"]
    ok = _cli("eval", "check", "--report", str(again_path), "--baseline", str(base_path))
    assert ok.exit_code == 0 and "no regression" in ok.output

    res, changed, changed_path = _live(tmp / "run3", "--fusion", "rrf", "--rrf-k", "1", "--baseline", str(base_path))
    assert changed["meta"]["ranking"]["rrf_k"] == 1
    assert res.exit_code == 1 and "regression: RBO@10" in res.output and "most changed: " in res.output
    worst = changed["stability"]["most_changed"]
    assert worst and worst[0]["rbo"] < 1.0 and worst[0]["query"] in res.output
    gate = _cli("eval", "check", "--report", str(changed_path), "--baseline", str(base_path))
    assert gate.exit_code == 1 and "most changed: " + worst[0]["query"] in gate.output


def test_another_query_set_is_refused(deployment: tuple[Path, pytest.MonkeyPatch],
                                      first: tuple[Result, dict[str, Any], Path]) -> None:
    tmp = deployment[0]
    two = tmp / "two.json"
    two.write_text(json.dumps({"personas": [{"name": "alice", "principals": ["user:alice", "group:finance"]},
                                            {"name": "erin", "principals": ["user:erin"]}]}))
    res = _cli("eval", "run", "--live", "--personas", str(two), "--out", str(tmp / "run4"))
    assert res.exit_code == 0, res.output
    gate = _cli("eval", "check", "--report", str(next((tmp / "run4").glob("*.json"))), "--baseline", str(first[2]))
    assert gate.exit_code == 1 and "refused: different dataset or query set" in gate.output


def test_pool_judge_import_and_judged_coverage(deployment: tuple[Path, pytest.MonkeyPatch]) -> None:
    import csv

    tmp = deployment[0]
    queries = tmp / "queries.jsonl"
    queries.write_text('{"id": "salary", "query": "salary bands for L4 engineers"}\n'
                       '{"id": "travel", "query": "travel expenses hotel cap"}\n')
    res = _cli("eval", "pool", "--personas", str(PERSONAS), "--queries", str(queries), "--out", str(tmp / "pool"))
    assert res.exit_code == 0, res.output
    with (tmp / "pool.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert (tmp / "pool.jsonl").exists() and rows and all(r["text"] and r["uri"] and r["personas"] for r in rows)
    bands = [r for r in rows if r["document"] == "acme/demo/hr/salary-bands.xlsx"]
    assert bands and all(r["personas"] == "bob" for r in bands)  # only bob may see it, so only bob pooled it
    grades = {("salary", "acme/demo/hr/salary-bands.xlsx"): "2", ("salary", "acme/demo/company/employee-handbook.md"): "0",
              ("travel", "acme/demo/company/travel-and-expense-policy.md"): "2"}
    for r in rows:
        r["grade"] = grades.get((r["query_id"], r["document"]), "")
    graded = tmp / "graded.csv"
    with graded.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    res = _cli("eval", "judge", "import", str(graded), "--out", str(tmp / "qrels.tsv"))
    assert res.exit_code == 0, res.output
    bad = tmp / "bad.jsonl"
    bad.write_text('{"query_id": "salary", "document": "acme/demo/hr/no-such-file.md", "grade": 1}\n')
    res = _cli("eval", "judge", "import", str(bad), "--out", str(tmp / "bad.tsv"))
    assert res.exit_code == 2 and "error [unknown_documents]" in res.output and "acme/demo/hr/no-such-file.md" in res.output

    res = _cli("eval", "run", "--live", "--personas", str(PERSONAS), "--queries", str(queries),
               "--qrels", str(tmp / "qrels.tsv"), "--out", str(tmp / "run5"))
    assert res.exit_code == 0, res.output
    report = json.loads(next((tmp / "run5").glob("*.json")).read_text())
    bob = report["personas"]["bob"]["labelled"]
    assert bob["queries"] == 2 and 0.0 < bob["ndcg@10"] <= 1.0 and 0.0 < bob["judged@10"] < 1.0
    # erin may not see the salary bands: only the travel query is scored for her
    assert report["personas"]["erin"]["labelled"]["queries"] == 1
    assert "judged@10" in next((tmp / "run5").glob("*.html")).read_text()
