"""BEIR-format datasets: corpus.jsonl, queries.jsonl, qrels/test.tsv (score > 0 = relevant).
Production query sets come as JSONL: {"id", "query", "relevant": {doc_id: grade}}."""

from __future__ import annotations

import csv
import json
from collections.abc import KeysView
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidRequestError


@dataclass(frozen=True)
class Dataset:
    name: str
    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_beir(path: Path, *, split: str = "test", max_docs: int | None = None, max_queries: int | None = None) -> Dataset:
    if not (path / "corpus.jsonl").exists():
        raise InvalidRequestError(f"{path} is not a BEIR folder (no corpus.jsonl)")
    qrels_path = path / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise InvalidRequestError(f"{path} has no qrels/{split}.tsv: a labelled run needs judgments "
                                  "(for a label-free run on the deployment's own corpus: `clearance eval run --live`)",
                                  code="dataset_invalid")
    if not (path / "queries.jsonl").is_file():
        raise InvalidRequestError(f"{path} has no queries.jsonl", code="dataset_invalid")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if int(row["score"]) > 0:
                qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    queries = {}
    for line in (path / "queries.jsonl").open():
        q = json.loads(line)
        if q["_id"] in qrels:
            queries[q["_id"]] = q["text"]
    if max_queries is not None:
        queries = dict(sorted(queries.items())[:max_queries])
    corpus: dict[str, tuple[str, str]] = {}
    for line in (path / "corpus.jsonl").open():
        d = json.loads(line)
        corpus[d["_id"]] = (d.get("title", "") or "", d.get("text", "") or "")
    check_known_ids(qrels, corpus.keys(), str(qrels_path))
    if max_docs is not None and len(corpus) > max_docs:
        # Keep every judged document of the kept queries, then fill up in corpus order.
        keep = {d for q in queries for d in qrels.get(q, {}) if d in corpus}
        for doc_id in corpus:
            if len(keep) >= max_docs:
                break
            keep.add(doc_id)
        corpus = {k: v for k, v in corpus.items() if k in keep}
    qrels = {q: {d: s for d, s in rel.items() if d in corpus} for q, rel in qrels.items() if q in queries}
    queries = {q: t for q, t in queries.items() if qrels.get(q)}
    return Dataset(path.name, corpus, queries, qrels)


def check_known_ids(qrels: dict[str, dict[str, int]], corpus_ids: set[str] | KeysView[str], where: str) -> None:
    """Labels naming a document the corpus does not hold are an error listing them (never a
    silent miss: a mistyped id would otherwise be scored as a relevant document not found)."""
    unknown = sorted({d for rel in qrels.values() for d in rel if d not in corpus_ids})
    if unknown:
        shown = ", ".join(unknown[:20]) + (f" (and {len(unknown) - 20} more)" if len(unknown) > 20 else "")
        raise InvalidRequestError(f"{where}: {len(unknown)} labelled document id(s) not in the corpus: {shown}",
                                  code="unknown_documents")


def load_query_jsonl(path: Path) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Queries from production (e.g. exported from the audit log and reviewed)."""
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for n, line in enumerate(path.open(), start=1):
        if not line.strip():
            continue
        rec = json.loads(line)
        try:
            qid = str(rec.get("id", n))
            queries[qid] = str(rec["query"])
            qrels[qid] = {str(d): int(g) for d, g in rec["relevant"].items() if int(g) > 0}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidRequestError(f"{path}:{n}: expected {{id, query, relevant: {{doc: grade}}}}") from exc
    return queries, qrels
