"""The ONNX encoder (the default) gives the torch reference's vectors, and exports only once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.settings import EmbedderSettings
from retrieval.embedder import MiniLmEmbedder, build_embedder, packaged_model_path
from retrieval.onnx_minilm import OnnxMiniLmEmbedder, onnx_path_for
from tests.conftest import DATASETS

pytestmark = pytest.mark.slow
SCIFACT = DATASETS / "scifact"


@pytest.fixture(scope="module")
def onnx_embedder() -> OnnxMiniLmEmbedder:
    return build_embedder(EmbedderSettings(runtime="onnx"))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def torch_reference() -> MiniLmEmbedder:
    return MiniLmEmbedder(EmbedderSettings(runtime="torch"))


def _texts() -> tuple[list[str], list[str]]:
    queries = [json.loads(line)["text"] for line in (SCIFACT / "queries.jsonl").open()][:60]
    docs = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").open()][:24]
    return queries, [f"{d['title']}\n{d['text']}" for d in docs]  # abstracts run past 256 tokens: truncation


def test_onnx_vectors_equal_the_torch_reference(onnx_embedder, torch_reference) -> None:
    queries, docs = _texts()
    for texts in (queries, docs):
        ours, ref = onnx_embedder.embed(texts), torch_reference.embed(texts)
        assert ours.shape == ref.shape == (len(texts), 384)
        assert float((ours * ref).sum(axis=1).min()) > 0.9999
        assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # the query path (no batching, no padding) agrees with the batched path
    assert float(onnx_embedder.embed_query(queries[0]) @ torch_reference.embed_query(queries[0])) > 0.9999


def test_batch_order_and_padding_do_not_change_vectors(onnx_embedder) -> None:
    texts = ["short", "a much longer text " * 40, "", "médecine et santé"]
    together = onnx_embedder.embed(texts)
    alone = np.stack([onnx_embedder.embed_query(t) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    assert np.isfinite(together).all()


def test_export_is_cached_by_weights(tmp_path: Path) -> None:
    model = packaged_model_path()
    first = onnx_path_for(model, tmp_path)
    mtime = first.stat().st_mtime_ns
    assert onnx_path_for(model, tmp_path) == first and first.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp files left behind
