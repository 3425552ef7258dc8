"""Labels cheaply: pool the answers to a query set into a judging sheet, read the grades back.

``pool`` asks every query of a query set as every persona (the persona a query names, if any)
in every mode, keeps the union of each answer's top-k documents, and writes one row per
(query, document) with the text of the best chunk and the citation (source, doc_id, uri,
title), so a judge can grade without opening anything. Only documents some persona was handed
appear: the sheet never shows a judge a document none of the evaluated people can see.

``import_grades`` reads a graded sheet (CSV or JSONL; ``grade`` an integer >= 0, blank =
unjudged) into qrels ``{query id: {document key: grade}}``; a grade of 0 is kept (judged not
relevant), which is what ``judged@10`` counts next to nDCG@10 in a live run, so unjudged
results are visible instead of being silently counted as misses. Document keys the catalog
does not hold are an error listing them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from app.services import Services
from core.errors import InvalidRequestError
from core.types import Scope, SearchMode
from eval.live import Persona, Query, check_documents, check_query_personas

SHEET_FIELDS = ("query_id", "query", "document", "source", "doc_id", "title", "uri", "text", "modes", "best_rank",
                "personas", "grade")


def pool(services: Services, queries: list[Query], personas: list[Persona], *, k: int = 10,
         modes: Iterable[SearchMode] = ("bm25", "dense", "hybrid")) -> list[dict[str, Any]]:
    """Rows of the judging sheet (``grade`` empty), by query then best rank."""
    check_query_personas(queries, personas)
    tenant = services.settings.ingest.tenant
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for q in queries:
        qid = q.id.removeprefix("q:")
        for p in personas:
            if q.persona not in (None, p.name):
                continue
            scope = Scope(p.entitlements(tenant))
            for mode in modes:
                res = services.search_unaudited.search(scope, q.text, top_k=k, mode=mode, group_by="document",
                                                       chunks_per_document=1)
                for rank, g in enumerate(res.documents or [], start=1):
                    best = g.hits[0]
                    row = rows.setdefault((qid, g.key), {
                        "query_id": qid, "query": q.text, "document": g.key, "source": g.source, "doc_id": g.doc_id,
                        "title": str(best.provenance.get("title", "")), "uri": str(best.provenance.get("uri", "")),
                        "text": best.text, "modes": set(), "best_rank": rank, "personas": set(), "grade": ""})
                    row["modes"].add(mode)
                    row["personas"].add(p.name)
                    row["best_rank"] = min(row["best_rank"], rank)
    out = sorted(rows.values(), key=lambda r: (r["query_id"], r["best_rank"], r["document"]))
    for r in out:
        r["modes"], r["personas"] = " ".join(sorted(r["modes"])), " ".join(sorted(r["personas"]))
    return out


def write_sheet(rows: list[dict[str, Any]], stem: Path) -> dict[str, Path]:
    """``<stem>.csv`` and ``<stem>.jsonl``."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {"csv": stem.with_suffix(".csv"), "jsonl": stem.with_suffix(".jsonl")}
    with paths["csv"].open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SHEET_FIELDS)
        w.writeheader()
        w.writerows(rows)
    paths["jsonl"].write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return paths


def import_grades(path: Path, known_documents: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
    """Grades from a sheet (``.csv`` or ``.jsonl``) as qrels; blank grades are unjudged."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            records: list[dict[str, Any]] = list(csv.DictReader(f))
    else:
        try:
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except ValueError as exc:
            raise InvalidRequestError(f"{path}: not JSONL: {exc}", code="sheet_invalid") from exc
    qrels: dict[str, dict[str, int]] = {}
    for n, rec in enumerate(records, start=2 if path.suffix.lower() == ".csv" else 1):
        if not isinstance(rec, dict) or not rec.get("query_id") or not rec.get("document"):
            raise InvalidRequestError(f"{path}:{n}: needs query_id and document", code="sheet_invalid")
        raw = str(rec.get("grade", "") if rec.get("grade") is not None else "").strip()
        if raw == "":
            continue
        try:
            grade = int(raw)
            if grade < 0:
                raise ValueError
        except ValueError as exc:
            raise InvalidRequestError(f"{path}:{n}: grade {raw!r} is not an integer >= 0", code="sheet_invalid") from exc
        qrels.setdefault(str(rec["query_id"]), {})[str(rec["document"])] = grade
    if known_documents is not None:
        check_documents(qrels, set(known_documents), str(path))
    return qrels


def write_qrels(qrels: dict[str, dict[str, int]], path: Path) -> None:
    """BEIR/TREC-style TSV (``query-id corpus-id score``), zero grades included."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["query-id\tcorpus-id\tscore"]
    lines += [f"{q}\t{d}\t{g}" for q in sorted(qrels) for d, g in sorted(qrels[q].items())]
    path.write_text("\n".join(lines) + "\n")


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    try:
        with path.open() as f:
            for row in csv.DictReader(f, delimiter="\t"):
                qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise InvalidRequestError(f"{path}: expected a TSV with query-id, corpus-id, score: {exc}",
                                  code="qrels_invalid") from exc
    return qrels
