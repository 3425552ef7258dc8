"""The identifier query set (eval.identifiers): rare, identifier-shaped or proper-name tokens,
seeded, each answered by every document that holds it."""

from __future__ import annotations

from eval.identifiers import IdentifierQuery, generate, success

CORPUS = {
    "a": ("Incident report", "The outage INC-2041 hit the Frankfurt region. Kosaraju wrote the fix."),
    "b": ("Release notes", "Version 2 ships the BRCA1 parser; see INC-2041 for the outage."),
    "c": ("Handbook", "Frankfurt is where the team meets. The board meets monthly."),
    "d": ("Minutes", "the board approved the budget. Nothing about codes here."),
}


def test_queries_are_rare_tokens_answered_by_every_holder() -> None:
    qs = generate(CORPUS, n=10, seed=1)
    assert qs == generate(CORPUS, n=10, seed=1)  # seeded
    by_text = {q.text: q for q in qs}
    for q in qs:
        holders = {d for d, (t, b) in CORPUS.items() if q.text.lower() in f"{t} {b}".lower()}
        assert q.answers == holders and 1 <= len(holders) <= 3
        assert q.id.split("#")[0] in holders
    assert by_text.get("INC-2041", IdentifierQuery("", "", "code", frozenset({"a", "b"}))).answers == {"a", "b"}
    assert all(q.kind == "code" for q in qs if any(c.isdigit() for c in q.text))
    # "Board" is written in lower case elsewhere, so it is not a name; a sentence's first word is not either
    assert "Board" not in by_text and "Nothing" not in by_text


def test_success_counts_any_holder_in_the_top_k() -> None:
    qs = [IdentifierQuery("a#code", "INC-2041", "code", frozenset({"a", "b"})),
          IdentifierQuery("c#name", "Kosaraju", "name", frozenset({"a"}))]
    ranked = {"INC-2041": ["b", "x"], "Kosaraju": [*"xyzuvwpqrs", "a"]}
    got = success(qs, lambda t: ranked[t])
    assert got["all"] == {"queries": 2, "success@1": 0.5, "success@10": 0.5}
    assert got["code"]["success@1"] == 1.0 and got["name"]["success@10"] == 0.0
