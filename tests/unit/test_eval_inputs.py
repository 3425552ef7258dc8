"""Evaluation inputs fail loudly (issue 17): a dataset folder without judgments, labels naming
documents the corpus does not hold, personas and query-set files that do not parse."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.errors import InvalidRequestError
from eval.beir import load_beir
from eval.live import Persona, check_query_personas, generate_known_items, load_personas, load_queries

REPO = Path(__file__).resolve().parents[2]


def _beir(tmp: Path, qrels: str | None) -> Path:
    d = tmp / "mini"
    d.mkdir()
    (d / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": f"doc {i}"}) + "\n" for i in ("d1", "d2")))
    (d / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "doc"}) + "\n")
    if qrels is not None:
        (d / "qrels").mkdir()
        (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return d


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("CLEARANCE_STORAGE__DATA_DIR", str(tmp_path / "var"))
    return CliRunner()


def test_folder_without_qrels_is_a_one_line_error(tmp_path: Path, cli: CliRunner) -> None:
    from cli.main import app

    d = _beir(tmp_path, None)
    with pytest.raises(InvalidRequestError, match="no qrels/test.tsv"):
        load_beir(d)
    res = cli.invoke(app, ["eval", "run", "--dataset", str(d), "--embedder", "hash"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error [dataset_invalid]:") and "Traceback" not in res.output


def test_unknown_document_ids_in_labels_are_listed(tmp_path: Path, cli: CliRunner) -> None:
    from cli.main import app

    d = _beir(tmp_path, "q1\td1\t1\nq1\td9\t1\nq1\tdx\t2\n")
    with pytest.raises(InvalidRequestError, match="2 labelled document id.*d9, dx"):
        load_beir(d)
    (tmp_path / "g").mkdir()
    good = _beir(tmp_path / "g", "q1\td1\t1\n")
    labels = tmp_path / "prod.jsonl"
    labels.write_text(json.dumps({"id": "a", "query": "doc", "relevant": {"d1": 1, "typo-id": 1}}) + "\n")
    res = cli.invoke(app, ["eval", "run", "--dataset", str(good), "--queries-jsonl", str(labels), "--embedder", "hash"])
    assert res.exit_code == 2 and "error [unknown_documents]" in res.output and "typo-id" in res.output
    labels.write_text(json.dumps({"id": "a", "query": "doc", "relevant": {}}) + "\n")
    res = cli.invoke(app, ["eval", "run", "--dataset", str(good), "--queries-jsonl", str(labels), "--embedder", "hash"])
    assert res.exit_code == 2 and "error [no_labels]" in res.output and "--live" in res.output


def test_live_needs_personas(cli: CliRunner) -> None:
    from cli.main import app

    res = cli.invoke(app, ["eval", "run", "--live"])
    assert res.exit_code == 2 and "--personas" in res.output
    res = cli.invoke(app, ["eval", "run"])
    assert res.exit_code == 2 and "--dataset" in res.output


def test_demo_personas_file_parses() -> None:
    personas = load_personas(REPO / "eval" / "personas" / "demo.yaml")
    assert [p.name for p in personas] == ["alice", "bob", "carol", "dave", "erin"]
    dave = personas[3].entitlements("acme")
    assert dave.principals == {"user:dave", "group:legal", "group:exec", "tenant:acme"}


@pytest.mark.parametrize("body, match", [
    ('{"personas": []}', "non-empty list"),
    ('{"personas": [{"principals": ["user:a"]}]}', "needs a name"),
    ('{"personas": [{"name": "a", "principals": "user:a"}]}', "list of principals"),
    ('{"personas": [{"name": "a", "principals": ["nonsense"]}]}', "persona 'a'"),
    ('[{"name": "a", "principals": []}, {"name": "a", "principals": []}]', "twice"),
    ("{not json", "not valid JSON"),
])
def test_bad_personas_files_are_errors(tmp_path: Path, body: str, match: str) -> None:
    f = tmp_path / "p.json"
    f.write_text(body)
    with pytest.raises(InvalidRequestError, match=match):
        load_personas(f)


def test_query_set_file(tmp_path: Path) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text('{"id": "a", "query": "travel"}\n\n{"id": "b", "query": "salary", "persona": "bob"}\n')
    qs = load_queries(f)
    assert [(q.id, q.text, q.persona) for q in qs] == [("q:a", "travel", None), ("q:b", "salary", "bob")]
    f.write_text('{"id": "a", "query": "x"}\n{"id": "a", "query": "y"}\n')
    with pytest.raises(InvalidRequestError, match="twice"):
        load_queries(f)
    with pytest.raises(InvalidRequestError, match="personas file does not hold: bob"):
        check_query_personas(qs, [Persona("alice", "alice", frozenset())])


def test_known_item_generation_is_seeded_and_documented() -> None:
    docs = {
        "t/s/a": ("s", "Incident postmortem", "Short.\nThe outage of cluster INC-2041 lasted forty minutes on Tuesday night. "
                  "Everyone agreed that the pager rota needs another engineer."),
        "t/s/b": ("s", "x", "Quarterly numbers for Q3 were fine and everyone agreed that revenue grew a little bit."),
    }
    one = generate_known_items(docs, seed=13)
    assert one == generate_known_items(docs, seed=13)
    kinds = {q.kind: q for q in one["t/s/a"]}
    assert kinds["title"].text == "Incident postmortem" and kinds["title"].known == "t/s/a"
    assert kinds["identifier"].text == "INC-2041"
    assert kinds["sentence"].text.split()[0] in {"The", "Everyone"}
    assert [q.kind for q in one["t/s/b"]] == ["sentence", "identifier"]  # a one-word title is no query
    assert generate_known_items(docs, seed=13, kinds=("title",))["t/s/b"] == []
    assert Persona("p", "p", frozenset()).entitlements("acme").principals == {"tenant:acme"}


def test_tiny_labelled_run_reports_html_and_keeps_query_runs_apart(tmp_path: Path, cli: CliRunner) -> None:
    from cli.main import app

    d = tmp_path / "tiny"
    d.mkdir()
    docs = {"d1": ("Vitamin D study", "Vitamin d deficiency is common in northern winters, trial VD-2041 found."),
            "d2": ("Kubernetes upgrade", "The cluster upgrade to version K8-129 needed two maintenance windows."),
            "d3": ("Travel policy", "Hotel expenses are capped per night in every city, see rule TP-77.")}
    (d / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": t, "text": v}) + "\n"
                                            for k, (t, v) in docs.items()))
    (d / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "vitamin d"}) + "\n")
    (d / "qrels").mkdir()
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    out = tmp_path / "out"
    res = cli.invoke(app, ["eval", "run", "--dataset", str(d), "--embedder", "hash", "--out", str(out), "--no-personas",
                           "--known-items", "3"])
    assert res.exit_code == 0, res.output
    assert re.search(r"tiny known-item MRR@10 bm25 \d\.\d{4}  dense \d\.\d{4}  hybrid \d\.\d{4}", res.output)
    html = (out / "tiny.html").read_text()
    assert "Known-item check" in html
    assert "data:image/png;base64," in html and "<table>" in html and not re.search(r"src=['\"]http", html)
    report = json.loads((out / "tiny.json").read_text())
    assert report["identity"] and report["meta"]["ranking"]["rrf_k"] == 30
    assert report["modes"]["hybrid"]["ms_per_query_production"] > 0
    prod = tmp_path / "prod.jsonl"
    prod.write_text(json.dumps({"id": "p1", "query": "hotel cap", "relevant": {"d3": 1}}) + "\n")
    res = cli.invoke(app, ["eval", "run", "--dataset", str(d), "--embedder", "hash", "--out", str(out), "--no-personas",
                           "--known-items", "0", "--queries-jsonl", str(prod)])
    assert res.exit_code == 0, res.output
    assert (out / "tiny+prod.json").exists() and json.loads((out / "tiny.json").read_text())["queries"] == 1


def test_labelled_runs_chunk_as_configured_in_their_own_collection(tmp_path: Path, cli: CliRunner,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment's chunk settings reach the evaluation (never silently the defaults), and a
    different chunking never reuses a collection chunked otherwise."""
    from cli.main import app

    d = tmp_path / "long"
    d.mkdir()
    text = " ".join(f"Sentence {i} about vitamin d and winter trials in the north." for i in range(40))
    (d / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "Vitamin D", "text": text}) + "\n")
    (d / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "vitamin d"}) + "\n")
    (d / "qrels").mkdir()
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    args = ["eval", "run", "--dataset", str(d), "--embedder", "hash", "--no-personas", "--known-items", "0",
            "--identifiers", "0"]
    res = cli.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    default = json.loads((tmp_path / "a" / "long.json").read_text())
    monkeypatch.setenv("CLEARANCE_INGEST__CHUNK_CHARS", "400")
    monkeypatch.setenv("CLEARANCE_INGEST__CHUNK_OVERLAP_CHARS", "50")
    res = cli.invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    small = json.loads((tmp_path / "b" / "long.json").read_text())
    assert small["meta"]["ranking"]["chunk_chars"] == 400 and default["meta"]["ranking"]["chunk_chars"] == 1200
    assert small["chunks"] > default["chunks"] >= 1
    assert sorted(p.name for p in (tmp_path / "var" / "eval").iterdir()) == ["long-hash", "long-hash-chunk400-50-200"]
