"""The regression gate's refusals and the label-free gate.

A gate compares two runs only when they are runs of the same thing. ``refusals`` lists why two
reports may not be compared (each a complete sentence; any one makes ``clearance eval check``
exit non-zero before a metric is looked at):

- a different dataset or query set (name, or identity hash where both reports carry one);
- different counts (documents, queries, personas): a subsampled run is not the same run;
- a run that skipped leak checks its baseline had.

The label-free gate (live reports, ``eval.live``) then fails on: any leak; leak checks on 0
chunks; a zero-result rate above the baseline's by more than the tolerance; a known-item MRR@10
below the baseline's by more than the tolerance; a mean RBO@10 against the baseline below
``rbo_min`` (the most changed queries are listed). The default ``rbo_min`` is strict (0.95): the
identity hash already pins the corpus, the ACLs and the query set, and equal scores are ordered
by chunk id, so an unchanged deployment reproduces its rankings (RBO 1.0, or 0.9998 on the demo
where equal scores straddle the edge of the engine's candidate list); what moves them is a
change to ranking code or settings, which the gate is there to make visible (on the
demo, RRF k 60 -> 1 gives 0.92 with the hash embedder). A baseline is
reported stale (a note, not a failure) when the run is better than it by more than the
tolerance: refresh it so the gate keeps guarding the better figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eval.stability import compare

RBO_MIN = 0.95


@dataclass
class GateResult:
    refusals: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stability: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return not self.refusals and not self.problems


def _identity(report: dict[str, Any]) -> str | None:
    ident = report.get("meta", {}).get("identity", {}).get("hash") if report.get("kind") == "live" else report.get("identity")
    return str(ident) if ident else None


def _counts(report: dict[str, Any]) -> dict[str, Any]:
    if report.get("kind") == "live":
        c = report.get("meta", {}).get("counts", {})
        return {k: c.get(k) for k in ("documents", "personas", "queries")}
    return {"documents": report.get("docs"), "queries": report.get("queries")}


def _leak_checks(report: dict[str, Any]) -> int | None:
    """Chunks the run checked for leaks; None when it ran no leak check at all."""
    if report.get("kind") == "live":
        return int(report.get("leak_checks", {}).get("checked_chunks", 0))
    ent = report.get("entitlements")
    return None if ent is None else int(ent.get("checks", 0))


def top10(report: dict[str, Any]) -> dict[str, list[str]]:
    """Per-query top-10 document keys of a live report (what stability compares)."""
    return {r["key"]: list(r["top10"]) for r in report.get("queries", [])}


def refusals(current: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    out: list[str] = []
    kinds = current.get("kind", "labelled"), baseline.get("kind", "labelled")
    if kinds[0] != kinds[1]:
        return [f"cannot compare a {kinds[0]} run with a {kinds[1]} baseline"]
    if "dataset" in baseline and current.get("dataset") != baseline["dataset"]:
        out.append(f"different datasets: run {current.get('dataset')!r}, baseline {baseline['dataset']!r}")
    a, b = _identity(current), _identity(baseline)
    if a and b and a != b:
        out.append(f"different dataset or query set: identity {a[:12]} (run) vs {b[:12]} (baseline)")
    elif kinds[0] == "live" and not (a and b):
        out.append("a live report without an identity hash cannot be compared")
    ca, cb = _counts(current), _counts(baseline)
    for k, v in cb.items():
        if v is not None and ca.get(k) != v:
            out.append(f"different {k} count: run {ca.get(k)}, baseline {v} (a subsample is not the same run)")
    la, lb = _leak_checks(current), _leak_checks(baseline)
    if lb and not la:
        out.append(f"the run skipped the leak checks its baseline had ({lb} chunks checked there, "
                   f"{'none' if la is None else 0} here)")
    return out


def live_gate(current: dict[str, Any], baseline: dict[str, Any] | None, *, tolerance: float = 0.01,
              rbo_min: float = RBO_MIN, max_zero_result_rate: float | None = None) -> GateResult:
    """The label-free gate; ``baseline`` None: leak and zero-result checks only."""
    res = GateResult()
    if baseline is not None:
        res.refusals = refusals(current, baseline)
        if res.refusals:
            return res
    lc = current.get("leak_checks", {})
    if not lc.get("checked_chunks"):
        res.problems.append("leak checks ran on 0 chunks: nothing was verified")
    if lc.get("leaks"):
        res.problems.append(f"leaks: {lc['leaks']} of {lc['checked_chunks']} returned chunks")
    zr = current.get("overall", {}).get("zero_result_rate")
    if max_zero_result_rate is not None and zr is not None and zr > max_zero_result_rate:
        res.problems.append(f"zero-result rate {zr:.4f} > {max_zero_result_rate:.4f}")
    if baseline is None:
        return res
    zb = baseline.get("overall", {}).get("zero_result_rate")
    if zr is not None and zb is not None and zr > zb + tolerance:
        res.problems.append(f"zero-result rate {zr:.4f} > baseline {zb:.4f} + {tolerance}")
    st = compare(top10(current), top10(baseline))
    res.stability = st
    if st["rbo_mean"] is None:
        res.problems.append("no query in common with the baseline: stability cannot be measured")
    elif st["rbo_mean"] < rbo_min:
        worst = "; ".join(f"{w['query']} (RBO {w['rbo']:.3f}, Jaccard {w['jaccard']:.2f})" for w in st["most_changed"][:5])
        res.problems.append(f"RBO@10 {st['rbo_mean']:.4f} < {rbo_min} against the baseline "
                            f"({st['queries'] - st['unchanged']} of {st['queries']} queries changed); most changed: {worst}")
    ka = current.get("overall", {}).get("known_item", {}).get("mrr@10")
    kb = baseline.get("overall", {}).get("known_item", {}).get("mrr@10")
    if ka is not None and kb is not None:
        if ka < kb - tolerance:
            res.problems.append(f"known-item MRR@10 {ka:.4f} < baseline {kb:.4f} - {tolerance}")
        elif ka > kb + tolerance:
            res.notes.append(f"stale baseline: known-item MRR@10 {ka:.4f} > baseline {kb:.4f} + {tolerance}; refresh it")
    if zr is not None and zb is not None and zr < zb - tolerance:
        res.notes.append(f"stale baseline: zero-result rate {zr:.4f} < baseline {zb:.4f} - {tolerance}; refresh it")
    return res
