"""Ingestion throughput against the embedder's own ceiling, same machine, same run.

1. Ceiling: the embedder alone on the exact chunk texts the pipeline will embed (batched as the
   pipeline batches them).
2. End to end: the production ``Ingestor`` (parse, chunk, embed, BM25, catalog, Edge upsert,
   optimize) on the same documents into a fresh store, no embedding cache.

    python -m bench.ingest --docs 1000 --out bench/results
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.services import build_services
from core.settings import EmbedderSettings, IngestSettings, Settings, StorageSettings
from core.types import Acl, SourceDocument
from ingest.chunking import chunk_elements
from ingest.parse import parse
from ingest.pipeline import Ingestor


def load_docs(scifact: Path, n: int) -> list[SourceDocument]:
    docs = []
    for line in (scifact / "corpus.jsonl").open():
        d = json.loads(line)
        docs.append(SourceDocument("scifact", d["_id"], f"beir://scifact/{d['_id']}", f"{d['_id']}.txt",
                                   (d["text"] or d["title"]).encode(), Acl(frozenset({"tenant:acme"})),
                                   datetime(2026, 1, 1, tzinfo=UTC), title=d["title"]))
        if len(docs) >= n:
            break
    return docs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--scifact", type=Path, default=Path("../shared/datasets/scifact"))
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--batch", type=int, default=IngestSettings().batch_docs, help="documents per ingestion batch")
    args = ap.parse_args()
    docs = load_docs(args.scifact, args.docs)
    tmp = Path(tempfile.mkdtemp(prefix="clearance-bench-ingest-"))
    settings = Settings(storage=StorageSettings(data_dir=tmp), embedder=EmbedderSettings(kind="minilm"))
    services = build_services(settings)
    try:
        # The exact texts the pipeline embeds (parse + chunk outside the timer).
        texts = []
        for d in docs:
            for c in chunk_elements(parse(d.filename, d.content), max_chars=settings.ingest.chunk_chars,
                                    overlap_chars=settings.ingest.chunk_overlap_chars):
                texts.append(Ingestor._embed_text(d, c))
        services.embedder.embed(texts[:32])  # warm-up
        t0 = time.perf_counter()
        for start in range(0, len(texts), 512):
            services.embedder.embed(texts[start:start + 512])
        ceiling = len(texts) / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        chunks = 0
        for start in range(0, len(docs), args.batch):
            for res in services.ingestor.apply_many(docs[start:start + args.batch]):
                if isinstance(res, tuple):
                    chunks += res[1]
        services.index.optimize()
        e2e = chunks / (time.perf_counter() - t0)
        report: dict[str, Any] = {"docs": len(docs), "chunks": chunks, "cores": os.cpu_count(),
                                  "embedder_chunks_per_s": round(ceiling, 1), "ingest_chunks_per_s": round(e2e, 1),
                                  "ratio": round(e2e / ceiling, 3)}
    finally:
        services.close()
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"ingest-{args.docs}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
