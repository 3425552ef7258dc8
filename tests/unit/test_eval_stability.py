"""RBO@10 and Jaccard@10 (eval.stability): closed-form expectations, p = 0.9."""

from __future__ import annotations

import pytest

from eval.stability import compare, jaccard, rbo

P = 0.9


def test_identical_rankings_score_one_at_any_length() -> None:
    assert rbo(list("abcdefghij"), list("abcdefghij")) == pytest.approx(1.0)
    assert rbo(list("abc"), list("abc")) == pytest.approx(1.0)
    assert rbo([], []) == 1.0 and jaccard([], []) == 1.0


def test_disjoint_rankings_score_zero() -> None:
    assert rbo(list("abc"), list("xyz")) == pytest.approx(0.0)
    assert rbo([], ["a"]) == 0.0
    assert jaccard(list("abc"), list("xyz")) == 0.0


def test_swapped_pair_is_p() -> None:
    # X_1 = 0, X_2 = 2: (1-p)/p * (2/2 * p^2) + (2/2) * p^2 = (1-p) p + p^2 = p
    assert rbo(["a", "b"], ["b", "a"]) == pytest.approx(P)


def test_top_weighted_swap_costs_more_than_a_tail_swap() -> None:
    base = list("abcdefghij")
    head = ["b", "a", *base[2:]]
    tail = [*base[:8], "j", "i"]
    assert rbo(head, base) < rbo(tail, base) < 1.0


def test_uneven_lengths_use_the_extrapolation() -> None:
    # S = [a], L = [a, b]: s=1, l=2, X_1 = 1, X_2 = 1.
    # sum_{d=1..2} X_d/d p^d = p + p^2/2; tail term X_s (d-s)/(s d) p^d at d=2 = p^2/2
    # RBO = (1-p)/p * (p + p^2) + ((1-1)/2 + 1/1) p^2 = (1-p)(1+p) + p^2 = 1
    assert rbo(["a"], ["a", "b"]) == pytest.approx(1.0)
    # S = [x], L = [a, b]: nothing shared
    assert rbo(["x"], ["a", "b"]) == pytest.approx(0.0)


def test_only_the_top_ten_count() -> None:
    a = list("abcdefghij") + ["k"]
    b = list("abcdefghij") + ["z"]
    assert rbo(a, b) == pytest.approx(1.0) and jaccard(a, b) == 1.0
    assert jaccard(list("abcd"), list("abce")) == pytest.approx(3 / 5)


def test_compare_lists_the_most_changed_queries_first() -> None:
    run = {"q1": ["a", "b"], "q2": ["x", "y"], "q3": ["b", "a"], "only-run": ["a"]}
    base = {"q1": ["a", "b"], "q2": ["a", "b"], "q3": ["a", "b"], "only-base": ["a"]}
    st = compare(run, base)
    assert st["queries"] == 3 and st["unchanged"] == 1
    assert [w["query"] for w in st["most_changed"]] == ["q2", "q3"]
    assert st["rbo_mean"] == pytest.approx((1.0 + 0.0 + P) / 3, abs=1e-6)
    assert st["only_in_run"] == 1 and st["only_in_baseline"] == 1


def test_judged_query_ndcg_uses_linear_gain() -> None:
    import math

    from eval.live import _ndcg10

    # dcg = 0/log2(2) + 2/log2(3); ideal = 2/log2(2) + 1/log2(3)
    got = _ndcg10(["a", "b", "x"], {"a": 0, "b": 2, "c": 1})
    assert got == pytest.approx((2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert _ndcg10(["a"], {"a": 0}) is None  # nothing relevant: not scored
