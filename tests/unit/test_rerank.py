"""The rerank stage with a real (tiny) cross-encoder built and trained at test time: no
packaged reranker exists offline, so the test makes one from the packaged MiniLM tokenizer."""

from __future__ import annotations

import random
from datetime import UTC
from pathlib import Path

import pytest
import torch

from retrieval.embedder import packaged_model_path
from retrieval.rerank import CrossEncoderReranker

TOPICS = ["revenue", "salary", "kubernetes", "contract", "audit", "parental", "holiday", "security"]
FILLER = "the of report team quarter plan update notes general overview summary review".split()


def _passage(rng: random.Random, topic: str | None) -> str:
    words = rng.choices(FILLER, k=12)
    if topic:
        words[rng.randrange(len(words))] = topic
    return " ".join(words)


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    rng = random.Random(0)
    path = str(packaged_model_path())
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    # The packaged MiniLM encoder plus a fresh scoring head: pretrained, it learns "the passage
    # mentions the query topic" in a few dozen steps (truncated to 2 layers it did not).
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, local_files_only=True)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    model.train()
    for _ in range(45):
        batch_q, batch_p, labels = [], [], []
        for _ in range(16):
            topic = rng.choice(TOPICS)
            positive = rng.random() < 0.5
            other = rng.choice([t for t in TOPICS if t != topic])
            batch_q.append(topic)
            batch_p.append(_passage(rng, topic if positive else other))
            labels.append(1.0 if positive else 0.0)
        enc = tok(batch_q, batch_p, padding=True, truncation=True, max_length=64, return_tensors="pt")
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**enc).logits.squeeze(-1), torch.tensor(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = tmp_path_factory.mktemp("tiny-cross-encoder")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_cross_encoder_ranks_the_matching_passage_first(tiny_cross_encoder: Path) -> None:
    rr = CrossEncoderReranker(tiny_cross_encoder)
    rng = random.Random(7)
    wins = 0
    for topic in TOPICS:
        passages = [_passage(rng, t) for t in rng.sample([t for t in TOPICS if t != topic], 4)] + [_passage(rng, topic)]
        scores = rr.scores(topic, passages)
        wins += max(range(len(scores)), key=scores.__getitem__) == len(passages) - 1
    assert wins >= 7, f"only {wins}/8 topics ranked first"
    assert rr.scores("x", []) == []


def test_missing_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        CrossEncoderReranker(tmp_path / "nope")


def test_search_service_reranks_within_the_scope(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    """The rerank stage reorders scoped candidates and never surfaces a hidden chunk."""
    from datetime import datetime

    from app.services import build_services
    from core.settings import RetrievalSettings
    from core.types import Acl, Entitlements, Scope, SourceDocument
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, retrieval=RetrievalSettings(rerank_model=str(tiny_cross_encoder), rerank_depth=20))
    services = build_services(settings)
    try:
        rng = random.Random(3)
        when = datetime(2026, 1, 1, tzinfo=UTC)
        docs = [SourceDocument("s", f"d{i}", f"s://d{i}", f"d{i}.txt", (_passage(rng, t) + " holiday").encode(),
                               Acl(frozenset({"group:a"})), when) for i, t in enumerate(TOPICS)]
        docs.append(SourceDocument("s", "hidden", "s://h", "h.txt", (_passage(rng, "salary") + " holiday").encode(),
                                   Acl(frozenset({"group:b"})), when))
        services.ingestor.apply_many(docs)
        scope = Scope(Entitlements("u", "i", "acme", frozenset({"group:a"})))
        res = services.search_unaudited.search(scope, "salary", top_k=3, mode="hybrid", explain=True)
        assert len(res.hits) == 3 and not res.degraded
        assert res.hits[0].provenance["doc_id"] == f"d{TOPICS.index('salary')}"
        assert all(h.provenance["doc_id"] != "hidden" for h in res.hits)
        assert res.hits[0].explain is not None and "rerank_score" in res.hits[0].explain
        assert [h.score for h in res.hits] == sorted((h.score for h in res.hits), reverse=True)
    finally:
        services.close()
