"""BM25 as a sparse vector: the engine applies IDF (``Modifier.Idf``), we apply TF saturation.

Document weight for term t: ``tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))``; query
weight 1 per distinct term. With the engine's IDF ``ln(1 + (N - n + 0.5) / (n + 0.5))`` the dot
product is Okapi BM25. Term ids are a stable 32-bit hash of the stemmed token, so no vocabulary
has to be stored or shared between processes.

Every vector leaving here is validated: a malformed sparse vector poisons an Edge shard.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import Stemmer

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)

# Lucene's English stop set plus a few very frequent function words.
STOP_WORDS = frozenset(
    """a an and are as at be but by for if in into is it no not of on or such that the their then
    there these they this to was will with from has have had were been its we our you your he she
    his her them which who whom what when where why how do does did so than too very can may""".split()
)


@dataclass(frozen=True)
class SparseVector:
    indices: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        validate_sparse(self.indices, self.values)


def validate_sparse(indices: tuple[int, ...] | list[int], values: tuple[float, ...] | list[float]) -> None:
    if len(indices) != len(values):
        raise ValueError("sparse vector: indices and values differ in length")
    if len(set(indices)) != len(indices):
        raise ValueError("sparse vector: duplicate indices")
    for i in indices:
        if not (0 <= i < 2**32):
            raise ValueError("sparse vector: index out of u32 range")
    for v in values:
        if not math.isfinite(v):
            raise ValueError("sparse vector: non-finite value")


_LOCAL = threading.local()


def _stemmer() -> Stemmer.Stemmer:
    # One per thread: PyStemmer objects keep internal state (a cache), so threads do not share one.
    st = getattr(_LOCAL, "stemmer", None)
    if st is None:
        st = _LOCAL.stemmer = Stemmer.Stemmer("english")
    return st


@lru_cache(maxsize=200_000)
def term_id(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "little")


def tokenize(text: str, *, stem: bool = True, stop_words: bool = True) -> list[str]:
    words = [w for w in _TOKEN.findall(text.lower()) if not (stop_words and w in STOP_WORDS)]
    return _stemmer().stemWords(words) if stem else words


@lru_cache(maxsize=200_000)
def word_term(word: str, stem: bool = True, stop_words: bool = True) -> str | None:
    """The BM25 term of one word (None for a stop word): snippets mark words one by one."""
    t = tokenize(word, stem=stem, stop_words=stop_words)
    return t[0] if t else None


@dataclass(frozen=True)
class Bm25Encoder:
    k1: float = 1.2
    b: float = 0.75
    avg_len: float = 120.0
    # Chosen by measurement on the BEIR sets (README, "BM25 tokenization"); both are settings
    # so the comparison can be rerun. Changing them requires re-ingesting.
    stem: bool = True
    stop_words: bool = True

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text, stem=self.stem, stop_words=self.stop_words)

    def word_term(self, word: str) -> str | None:
        return word_term(word, self.stem, self.stop_words)

    def encode_document(self, text: str) -> SparseVector:
        tokens = self.tokenize(text)
        if not tokens:
            return SparseVector((), ())
        counts = Counter(tokens)
        norm = self.k1 * (1 - self.b + self.b * len(tokens) / self.avg_len)
        by_id: dict[int, float] = {}
        for term, tf in counts.items():
            tid = term_id(term)
            # A hash collision merges two terms' weights; summing keeps the vector valid.
            by_id[tid] = by_id.get(tid, 0.0) + tf * (self.k1 + 1) / (tf + norm)
        ids = tuple(sorted(by_id))
        return SparseVector(ids, tuple(by_id[i] for i in ids))

    def encode_query(self, text: str) -> SparseVector:
        ids = tuple(sorted({term_id(t) for t in self.tokenize(text)}))
        return SparseVector(ids, tuple(1.0 for _ in ids))
