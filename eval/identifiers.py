"""Identifier queries: can a user find a document by the one rare token they remember?

People search for ticket numbers, codes, product and gene names, people's names. This set is
generated from a corpus, seeded and reproducible:

- candidates are the tokens of a document that are **rare in the collection** (in at most
  ``max_df`` documents) and either **identifier-shaped** (letters and digits together, possibly
  joined by ``-``, ``_`` or ``/``: ``INC-2041``, ``IL-6``, ``BRCA1``, ``p53``) — kind ``code`` —
  or a **proper name**: a capitalised word of at least five letters, in the body (titles are
  title case), not at a sentence start, and never written in lower case anywhere in the
  collection — kind ``name``;
- per sampled document (``seed``), the rarest candidate (ties: the first in the text) becomes
  the query, the token alone;
- the answer set is every document holding the token (at most ``max_df``): success@k is whether
  one of them is in the top k documents.

Reported per mode: success@1 and success@10, overall and per kind (``eval.harness``).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-_/][A-Za-z0-9]+)*")
_CODE = re.compile(r"(?=.*\d)(?=.*[A-Za-z])")
_NAME = re.compile(r"[A-Z][a-z]{4,}")
_SENTENCE_END = re.compile(r"[.!?:;]\s*$")


@dataclass(frozen=True)
class IdentifierQuery:
    id: str
    text: str
    kind: str  # code | name
    answers: frozenset[str]


def _candidates(text: str, lowercase: set[str]) -> list[tuple[str, str]]:
    """(token, kind) in text order, first occurrence only; ``lowercase``: words the collection
    also writes in lower case (so not names)."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(text):
        tok = m.group(0)
        if tok.lower() in seen or len(tok) < 3:
            continue
        if _CODE.match(tok):
            kind = "code"
        elif (_NAME.fullmatch(tok) and tok.lower() not in lowercase and m.start() > 0
              and not _SENTENCE_END.search(text[max(0, m.start() - 3):m.start()])):
            kind = "name"
        else:
            continue
        seen.add(tok.lower())
        out.append((tok, kind))
    return out


def generate(corpus: dict[str, tuple[str, str]], *, n: int, seed: int, max_df: int = 3) -> list[IdentifierQuery]:
    """Up to ``n`` queries from ``corpus`` (doc id -> (title, body))."""
    holders: dict[str, set[str]] = {}
    lowercase: set[str] = set()
    for doc, (title, body) in corpus.items():
        tokens = set(_TOKEN.findall(f"{title}\n{body}"))
        lowercase.update(t for t in tokens if t.islower())
        for tok in {t.lower() for t in tokens}:
            holders.setdefault(tok, set()).add(doc)
    df = Counter({t: len(d) for t, d in holders.items()})
    docs = sorted(corpus)
    random.Random(seed).shuffle(docs)
    out: list[IdentifierQuery] = []
    for doc in docs:
        if len(out) >= n:
            break
        rare = [(df[t.lower()], i, t, k) for i, (t, k) in enumerate(_candidates(corpus[doc][1], lowercase))
                if df[t.lower()] <= max_df]
        if not rare:
            continue
        _, _, tok, kind = min(rare)
        out.append(IdentifierQuery(f"{doc}#{kind}", tok, kind, frozenset(holders[tok.lower()])))
    return out


def success(queries: list[IdentifierQuery], rank: Callable[[str], list[str]]) -> dict[str, object]:
    """success@1 and @10 overall and per kind; ``rank`` returns document ids, best first."""
    hits: dict[str, list[tuple[bool, bool]]] = {}
    for q in queries:
        top = rank(q.text)[:10]
        at1, at10 = bool(top[:1]) and top[0] in q.answers, any(d in q.answers for d in top)
        hits.setdefault("all", []).append((at1, at10))
        hits.setdefault(q.kind, []).append((at1, at10))
    return {k: {"queries": len(v), "success@1": round(sum(a for a, _ in v) / len(v), 4),
                "success@10": round(sum(b for _, b in v) / len(v), 4)} for k, v in hits.items()}
