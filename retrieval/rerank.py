"""The optional rerank stage: a cross-encoder rescoring the top candidates of a scoped search.

It only reorders hits the scope already admitted, so it can never widen what a caller sees.
Off by default (``retrieval.rerank_model`` empty): no cross-encoder ships offline, so a
deployment points this at one it provides.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


class Reranker(Protocol):
    """Scores (query, passage) pairs; higher is more relevant."""

    name: str

    def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        ...


class CrossEncoderReranker:
    def __init__(self, model_path: Path, *, max_length: int = 256, batch_size: int = 16) -> None:
        from sentence_transformers import CrossEncoder

        if not model_path.is_dir():
            raise FileNotFoundError(f"reranker model folder not found: {model_path}")
        self.name = model_path.name
        self._model = CrossEncoder(str(model_path), device="cpu", max_length=max_length, local_files_only=True)
        self._batch = batch_size
        self._lock = threading.Lock()

    def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        with self._lock:
            out = self._model.predict([(query, p) for p in passages], batch_size=self._batch, convert_to_numpy=True)
        return [float(x) for x in out]
