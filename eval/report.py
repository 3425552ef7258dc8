"""Eval reports (JSON + markdown with PNG plots) and the regression check for CI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.errors import ClearanceError
from eval.gate import refusals

HEADLINE = ("ndcg@10", "recall@100", "mrr@10", "map")


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The part of a report that baselines keep: metrics per mode, leaks and stale counts."""
    out: dict[str, Any] = {"dataset": report["dataset"], "docs": report["docs"], "queries": report["queries"],
                           "embedder": report["embedder"], **({"identity": report["identity"]} if "identity" in report else {}),
                           "modes": {m: {k: round(v["metrics"][k], 4) for k in HEADLINE} for m, v in report["modes"].items()}}
    if "entitlements" in report:
        e = report["entitlements"]
        out["entitlements"] = {"leaks": e["leaks"], "checks": e["checks"],
                               "prefilter_ndcg@10": round(e["prefilter"]["ndcg@10"], 4)}
        if "postfilter_retrieve10" in e:
            out["entitlements"]["postfilter10_ndcg@10"] = round(e["postfilter_retrieve10"]["ndcg@10"], 4)
    if "known_item" in report:
        out["known_item_mrr@10"] = {m: v["mrr@10"] for m, v in report["known_item"]["modes"].items()}
    if report.get("identifiers", {}).get("queries"):
        out["identifier_success@10"] = {m: v["all"]["success@10"] for m, v in report["identifiers"]["modes"].items()}
    if "freshness" in report:
        out["freshness"] = {"stale_returned": report["freshness"]["stale_returned"],
                            "ndcg@10": round(report["freshness"]["metrics"]["ndcg@10"], 4)}
    return out


def write(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = report["dataset"]
    paths = {"json": out_dir / f"{name}.json", "md": out_dir / f"{name}.md"}
    paths["json"].write_text(json.dumps(report, indent=1, sort_keys=True))
    paths.update(_plots(report, out_dir))
    md = markdown(report, {k: p.name for k, p in paths.items() if k.startswith("png")})
    paths["md"].write_text(md)
    from eval.html import markdown_page

    paths["html"] = out_dir / f"{name}.html"
    paths["html"].write_text(markdown_page(md, {p.name: p for k, p in paths.items() if k.startswith("png")}))
    return paths


def _fusion(report: dict[str, Any]) -> str:
    """The hybrid fusion a report ran with (reports before ``retrieval.fusion`` were all RRF)."""
    fusion, weights = report.get("fusion", "rrf"), report.get("weights")
    text = f"RRF k={report['rrf_k']}" if fusion == "rrf" else f"{fusion} score fusion"
    return text + (f", leg weights dense {weights[0]:g} : bm25 {weights[1]:g}" if weights else "")


def markdown(report: dict[str, Any], images: dict[str, str]) -> str:
    lines = [f"# Retrieval evaluation: {report['dataset']}", "",
             f"{report['docs']} documents, {report.get('chunks', '?')} chunks, {report['queries']} queries; "
             f"embedder {report['embedder']}; {_fusion(report)}, prefetch {report['prefetch_limit']}.", "",
             "| mode | nDCG@10 | Recall@100 | MRR@10 | MAP | ms/query (depth 300) | ms/query (top_k 10) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for mode, v in report["modes"].items():
        m = v["metrics"]
        lines.append(f"| {mode} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | {m['mrr@10']:.4f} | {m['map']:.4f} | "
                     f"{v['ms_per_query']} | {v.get('ms_per_query_production', 'n/a')} |")
    if report.get("significance"):
        lines += ["", "Paired tests on per-query nDCG@10:", "",
                  "| a vs b | mean diff | p (t-test) | p (Wilcoxon) |", "|---|---:|---:|---:|"]
        for s in report["significance"]:
            lines.append(f"| {s['a']} vs {s['b']} | {s['mean_diff']:+.4f} | {s['p_ttest']:.3g} | {s['p_wilcoxon']:.3g} |")
    lc = report.get("low_confidence") or {}
    if lc.get("threshold") is not None:
        flagged = lc["unanswerable_flagged"]
        lines += ["", f"Low-confidence calibration (hybrid): threshold {lc['threshold']} on the best top-10 cosine flags "
                  f"{lc['answerable_flagged']:.0%} of {lc['answerable']} answerable queries and "
                  + (f"{flagged:.0%}" if flagged is not None else "n/a") + f" of {lc['unanswerable']} unanswerable ones."]
    if "known_item" in report:
        ki = report["known_item"]
        lines += ["", f"## Known-item check (label-free, {ki['queries']} queries from {ki['documents']} documents)", "",
                  "| mode | known-item MRR@10 | nDCG@10 |", "|---|---:|---:|"]
        for mode, v in ki["modes"].items():
            mrr = "n/a" if v["mrr@10"] is None else f"{v['mrr@10']:.4f}"
            lines.append(f"| {mode} | {mrr} | {report['modes'][mode]['metrics']['ndcg@10']:.4f} |")
        lines += ["", f"Modes by known-item MRR@10: {', '.join(ki['order_by_mrr@10'])}; by nDCG@10: "
                  f"{', '.join(ki['order_by_ndcg@10'])} ({'same order' if ki['orders_agree'] else 'different order'})."]
    if report.get("identifiers", {}).get("queries"):
        ids = report["identifiers"]
        kinds = sorted({k for v in ids["modes"].values() for k in v if k != "all"})
        lines += ["", f"## Identifier queries ({ids['queries']} rare codes and names, eval/identifiers.py)", "",
                  "| mode | success@1 | success@10 | " + " | ".join(f"{k} @1 / @10" for k in kinds) + " |",
                  "|---|---:|---:|" + "---:|" * len(kinds)]
        for mode, v in ids["modes"].items():
            cells = [f"{v[k]['success@1']:.3f} / {v[k]['success@10']:.3f} (n={v[k]['queries']})" if k in v else "n/a" for k in kinds]
            lines.append(f"| {mode} | {v['all']['success@1']:.3f} | {v['all']['success@10']:.3f} | " + " | ".join(cells) + " |")
    if "entitlements" in report:
        e = report["entitlements"]
        lines += ["", f"## Under entitlements ({e['mode']}, {e['persona_queries']} persona-query pairs)", "",
                  f"Leaks: **{e['leaks']}** in {e['checks']} returned chunks checked against the simulated ACLs.", "",
                  "| strategy | nDCG@10 | Recall@100 |", "|---|---:|---:|",
                  f"| pre-filter in the engine | {e['prefilter']['ndcg@10']:.4f} | {e['prefilter']['recall@100']:.4f} |"]
        if "postfilter_retrieve10" in e:
            lines.append(f"| post-filter, retrieve 10 then drop | {e['postfilter_retrieve10']['ndcg@10']:.4f} | "
                         f"{e['postfilter_retrieve10']['recall@100']:.4f} |")
            lines.append(f"| post-filter, retrieve 100 then drop | {e['postfilter_retrieve100']['ndcg@10']:.4f} | "
                         f"{e['postfilter_retrieve100']['recall@100']:.4f} |")
            lines.append("")
            lines.append(f"Post-filtering after retrieving 10 left {e['postfilter_empty_results_retrieve10']} persona-queries "
                         "with no result at all.")
        lines += ["", "| persona | visible docs | queries | nDCG@10 |", "|---|---:|---:|---:|"]
        for name, p in e["personas"].items():
            lines.append(f"| {name} | {p['visible_docs']:.0%} | {p['queries']} | {p['ndcg@10']:.4f} |")
    if "freshness" in report:
        f = report["freshness"]
        lines += ["", f"## Freshness (max_age {f['max_age_days']} days)", "",
                  f"Stale chunks returned: **{f['stale_returned']}** of {f['checks']} checked. "
                  f"{f['relevant_kept_share']:.0%} of relevant documents are fresh; nDCG@10 against the fresh "
                  f"judgments: {f['metrics']['ndcg@10']:.4f} over {f['queries']} queries."]
    for key, img in sorted(images.items()):
        lines += ["", f"![{key}]({img})"]
    return "\n".join(lines) + "\n"


def _plots(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = report["dataset"]
    out: dict[str, Path] = {}
    modes = list(report["modes"])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.8 / len(HEADLINE)
    for i, metric in enumerate(HEADLINE):
        ax.bar([x + i * width for x in range(len(modes))], [report["modes"][m]["metrics"][metric] for m in modes], width, label=metric)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(modes))], modes)
    ax.set_ylim(0, 1)
    ax.set_title(f"{name}: quality per mode")
    ax.legend(fontsize=7, ncol=4, loc="upper left")
    fig.tight_layout()
    out["png_modes"] = out_dir / f"{name}-modes.png"
    fig.savefig(out["png_modes"], dpi=100)
    plt.close(fig)
    if "hybrid" in modes and "bm25" in modes:
        h, b = report["modes"]["hybrid"]["per_query"], report["modes"]["bm25"]["per_query"]
        deltas = sorted(h[q]["ndcg@10"] - b[q]["ndcg@10"] for q in h.keys() & b.keys())
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.bar(range(len(deltas)), deltas, width=1.0, color=["#c44" if d < 0 else "#4a4" for d in deltas])
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_title(f"{name}: per-query nDCG@10, hybrid minus bm25")
        ax.set_xlabel("queries, sorted")
        fig.tight_layout()
        out["png_deltas"] = out_dir / f"{name}-deltas.png"
        fig.savefig(out["png_deltas"], dpi=100)
        plt.close(fig)
    return out


def check(current: dict[str, Any], baseline: dict[str, Any], tolerance: float) -> list[str]:
    """Regressions of ``current`` against ``baseline`` (both reports or headlines); [] if none."""
    cur = headline(current) if "ingest" in current else current  # a full report or a headline
    base = headline(baseline) if "ingest" in baseline else baseline
    problems = refusals(cur, base)  # not the same dataset, counts or leak checks: no comparison
    if problems:
        return problems
    if "entitlements" in cur and not cur["entitlements"].get("checks"):
        problems.append("leak checks ran on 0 returned chunks: nothing was verified")
    for mode, metrics in base.get("modes", {}).items():
        if mode not in cur.get("modes", {}):
            problems.append(f"{mode}: missing from the current report")
            continue
        for k, v in metrics.items():
            now = cur["modes"][mode].get(k)
            if now is None or now < v - tolerance:
                problems.append(f"{mode} {k}: {now} < baseline {v} - {tolerance}")
    if cur.get("entitlements", {}).get("leaks", 0):
        problems.append(f"leaks: {cur['entitlements']['leaks']}")
    if cur.get("freshness", {}).get("stale_returned", 0):
        problems.append(f"stale chunks returned: {cur['freshness']['stale_returned']}")
    return problems


def stale_notes(current: dict[str, Any], baseline: dict[str, Any], tolerance: float) -> list[str]:
    """The baseline is stale where the run beats it by more than ``tolerance`` (refresh it)."""
    cur = headline(current) if "ingest" in current else current
    base = headline(baseline) if "ingest" in baseline else baseline
    out = []
    for mode, metrics in base.get("modes", {}).items():
        for k, v in metrics.items():
            now = cur.get("modes", {}).get(mode, {}).get(k)
            if now is not None and now > v + tolerance:
                out.append(f"stale baseline: {mode} {k} {now} > baseline {v} + {tolerance}; refresh it")
    return out


def load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError) as exc:
        raise ClearanceError(f"cannot read {path}: {exc}", code="report_unreadable") from exc
