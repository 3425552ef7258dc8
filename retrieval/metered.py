"""An ``Embedder`` decorator that feeds the metrics and remembers the last failure."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from core.metrics import Metrics
from retrieval.embedder import Embedder


class MeteredEmbedder:
    """An ``Embedder`` that counts texts, seconds and failures, and remembers the last query
    failure (``/readyz`` reports a model that is failing as degraded)."""

    def __init__(self, inner: Embedder, metrics: Metrics) -> None:
        self.inner = inner
        self._metrics = metrics
        self.dim: int = inner.dim
        self.name: str = inner.name
        self._lock = threading.Lock()
        self.last_error: str | None = None  # type name of the last failure, cleared by a success
        self.last_error_at: float | None = None

    def _timed(self, kind: str, n: int, call: Callable[[], np.ndarray]) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            out = call()
        except Exception as exc:
            self._metrics.embed_errors.labels(kind).inc()
            with self._lock:
                self.last_error, self.last_error_at = type(exc).__name__, time.time()
            raise
        self._metrics.embed_seconds.labels(kind).inc(time.perf_counter() - t0)
        self._metrics.embed_texts.labels(kind).inc(n)
        if kind == "query" and self.last_error is not None:
            with self._lock:
                self.last_error, self.last_error_at = None, None
        return out

    def __getattr__(self, name: str) -> Any:
        # A transparent decorator: anything it does not define is the wrapped embedder's.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._timed("document", len(texts), lambda: self.inner.embed(texts))

    def embed_query(self, text: str) -> np.ndarray:
        return self._timed("query", 1, lambda: self.inner.embed_query(text))
