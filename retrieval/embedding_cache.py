"""An embedding cache keyed by model name and text hash (SQLite), so re-ingesting unchanged
text or re-running an evaluation never re-embeds. Wraps any ``Embedder``."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from retrieval.embedder import Embedder


class CachedEmbedder:
    def __init__(self, inner: Embedder, path: Path) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.name = inner.name
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _key(self, kind: str, text: str) -> str:
        return hashlib.sha256(f"{self.name}\x00{self.dim}\x00{kind}\x00{text}".encode()).hexdigest()

    def _lookup(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                part = keys[start:start + 500]
                rows = self._db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(part))})", part)
                for k, blob in rows:
                    found[k] = np.frombuffer(blob, dtype=np.float32)
        return found

    def _store(self, items: list[tuple[str, np.ndarray]]) -> None:
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                                 [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items])
            self._db.commit()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._cached("doc", list(texts), self.inner.embed)

    def embed_query(self, text: str) -> np.ndarray:
        row: np.ndarray = self._cached("query", [text], lambda t: self.inner.embed_query(t[0])[None, :])[0]
        return row

    def _cached(self, kind: str, texts: list[str], compute: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        keys = [self._key(kind, t) for t in texts]
        found = self._lookup(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            vecs = compute([texts[i] for i in missing])
            self._store([(keys[i], vecs[j]) for j, i in enumerate(missing)])
            for j, i in enumerate(missing):
                found[keys[i]] = np.asarray(vecs[j], dtype=np.float32)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, k in enumerate(keys):
            out[i] = found[k]
        return out

    def close(self) -> None:
        self._db.close()
