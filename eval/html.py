"""Live-evaluation reports: one self-contained HTML file (inline SVG plots, inline CSS, no
script, no external asset) next to the JSON, in an untracked folder by default (``var/eval``).
File names carry the start time and the identity hash, so a run never overwrites another
run's report (nor a report under version control)."""

from __future__ import annotations

import base64
import json
import re
from html import escape
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("var/eval")
COLOURS = ("#3b6ea5", "#e08a2c", "#4a9a4a", "#b04a4a")


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}"
    return escape(str(v))


def bars(title: str, groups: list[str], series: dict[str, list[float | None]], *, ymax: float = 1.0) -> str:
    """A grouped bar chart as inline SVG (values in [0, ymax]; None drawn as nothing)."""
    w, h, left, bottom, top = 640, 240, 40, 40, 28
    plot_w, plot_h = w - left - 10, h - bottom - top
    n_series = max(len(series), 1)
    group_w = plot_w / max(len(groups), 1)
    bar_w = group_w * 0.8 / n_series
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{escape(title)}">',
             f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>']
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" x2="{w - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{ymax * i / 4:.2f}</text>')
    for gi, g in enumerate(groups):
        x0 = left + gi * group_w + group_w * 0.1
        for si, (_name, values) in enumerate(series.items()):
            v = values[gi]
            if v is None:
                continue
            bh = plot_h * min(max(v / ymax, 0.0), 1.0)
            parts.append(f'<rect x="{x0 + si * bar_w:.1f}" y="{top + plot_h - bh:.1f}" width="{bar_w:.1f}" '
                         f'height="{bh:.1f}" fill="{COLOURS[si % len(COLOURS)]}"><title>{escape(g)}: {v:.4f}</title></rect>')
        parts.append(f'<text x="{x0 + group_w * 0.4:.1f}" y="{h - bottom + 14}" text-anchor="middle" font-size="11">'
                     f'{escape(g)}</text>')
    for si, name in enumerate(series):
        parts.append(f'<rect x="{left + si * 130}" y="{h - 16}" width="10" height="10" fill="{COLOURS[si % len(COLOURS)]}"/>'
                     f'<text x="{left + si * 130 + 14}" y="{h - 7}" font-size="11">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _breakdown(title: str, groups: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, g in groups.items():
        ki = g["known_item"]
        ci = ki.get("mrr@10_ci95")
        rows.append([name, g["queries"], g["checked_chunks"], g["leaks"], g["zero_result_rate"], g["low_confidence_rate"],
                     g["stale_source_rate"], ki["queries"], ki["mrr@10"],
                     f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else None, ki["success@1"], ki["success@10"]])
    return f"<h2>{escape(title)}</h2>" + _table(
        ["", "queries", "chunks checked", "leaks", "zero-result", "low-confidence", "stale-source", "known-item queries",
         "MRR@10", "MRR 95 % CI", "success@1", "success@10"], rows)


def render(report: dict[str, Any], gate: dict[str, Any] | None = None) -> str:
    meta = report["meta"]
    lc = report["leak_checks"]
    personas = report["personas"]
    names = list(personas)
    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
           f"<title>Clearance live evaluation: {escape(report['dataset'])}</title>",
           "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
           "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;"
           "text-align:right}td:first-child,th:first-child{text-align:left}.ok{color:#2a7a2a}.bad{color:#b02a2a}"
           "dt{font-weight:bold}dd{margin:0 0 .5em 1em}code{font-size:12px}</style></head><body>",
           f"<h1>Live evaluation: {escape(report['dataset'])}</h1>"]
    verdict = "bad" if lc["leaks"] or not lc["checked_chunks"] else "ok"
    out.append(f"<p class='{verdict}'><strong>Leaks: {lc['leaks']}</strong> in {lc['checked_chunks']} returned chunks "
               "checked against the catalog's ACLs" + (f" ({escape(lc['skipped'])})" if lc.get("skipped") else "") + ".</p>")
    c, t = meta["counts"], meta["timings"]
    out.append(f"<p>{c['documents']} documents, {c['chunks']} chunks, {c['personas']} personas, {c['queries']} "
               f"persona-queries ({c['external_queries']} external). Mode {escape(meta['mode'])}, seed {meta['seed']}. "
               f"Latency at the production top_k={t['top_k']} (group_by={escape(t['group_by'])}): mean {_fmt(t['ms_mean'])} ms, "
               f"p50 {_fmt(t['ms_p50'])} ms, p95 {_fmt(t['ms_p95'])} ms.</p>")
    out.append(f"<p>Commit <code>{escape(str(meta['commit']))}</code>{' (dirty tree)' if meta.get('dirty') else ''}; "
               f"identity <code>{escape(meta['identity']['hash'])}</code>; started {escape(meta['started_at'])}.</p>")
    if gate is not None:
        cls = "ok" if gate["passed"] else "bad"
        out.append(f"<h2>Gate against the baseline: <span class='{cls}'>{'passed' if gate['passed'] else 'FAILED'}</span></h2><ul>")
        for k in ("refusals", "problems", "notes"):
            out += [f"<li>{escape(k[:-1])}: {escape(m)}</li>" for m in gate.get(k, [])]
        out.append("</ul>")
    ki = {n: personas[n]["known_item"] for n in names}
    out.append(bars("Known-item retrieval per persona", names, {
        "MRR@10": [ki[n]["mrr@10"] for n in names], "success@1": [ki[n]["success@1"] for n in names],
        "success@10": [ki[n]["success@10"] for n in names]}))
    out.append(bars("Label-free rates per persona", names, {
        "zero-result": [personas[n]["zero_result_rate"] for n in names],
        "low-confidence": [personas[n]["low_confidence_rate"] for n in names],
        "stale-source": [personas[n]["stale_source_rate"] for n in names]}))
    out.append(_breakdown("Per persona", personas))
    out.append(_table(["persona", "principals", "visible documents"],
                      [[n, ", ".join(personas[n]["principals"]), personas[n]["visible_documents"]] for n in names]))
    labelled = {n: personas[n]["labelled"] for n in names if "labelled" in personas[n]}
    if labelled:
        out.append("<h2>Judged queries (nDCG@10 next to judged@10)</h2>" + _table(
            ["persona", "judged queries", "nDCG@10", "nDCG 95 % CI", "judged@10"],
            [[n, v["queries"], v["ndcg@10"], f"[{v['ndcg@10_ci95'][0]:.3f}, {v['ndcg@10_ci95'][1]:.3f}]"
              if v.get("ndcg@10_ci95") else None, v["judged@10"]] for n, v in labelled.items()]))
    out.append(_breakdown("Per source", report["sources"]))
    out.append(_breakdown("Per query kind", report["kinds"]))
    st = report.get("stability") or (gate or {}).get("stability")
    if st:
        out.append(f"<h2>Stability against the baseline</h2><p>{st['queries']} queries in common, {st['unchanged']} "
                   f"unchanged; mean RBO@10 (p={st['p']}) {_fmt(st['rbo_mean'])}, mean Jaccard@10 {_fmt(st['jaccard_mean'])}.</p>")
        buckets = [0] * 10
        for v in st["per_query"].values():
            buckets[min(int(v["rbo"] * 10), 9)] += 1
        total = max(sum(buckets), 1)
        out.append(bars("Queries by RBO@10 (share per 0.1 bucket)", [f"{i / 10:.1f}" for i in range(10)],
                        {"share of queries": [b / total for b in buckets]}))
        out.append("<h3>Most changed queries</h3>" + _table(
            ["query", "RBO@10", "Jaccard@10", "run top 3", "baseline top 3"],
            [[w["query"], w["rbo"], w["jaccard"], ", ".join(w["run"][:3]), ", ".join(w["baseline"][:3])]
             for w in st["most_changed"]]))
    out.append("<h2>Worst known-item queries</h2>" + _table(
        ["persona", "kind", "query", "known document", "rank", "top 3"],
        [[w["persona"], w["kind"], w["query"][:120], w["known"], w["rank"] or "not in top 10", ", ".join(w["top10"][:3])]
         for w in report["worst"]]))
    if lc.get("examples"):
        out.append("<h2>Leaks</h2>" + _table(["persona", "query", "chunk", "document", "why"],
                                             [[e["persona"], e["query"], e["chunk"], e["document"], e["why"]]
                                              for e in lc["examples"]]))
    out.append("<h2>Ranking settings</h2>" + _table(["setting", "value"],
                                                    [[k, json.dumps(v)] for k, v in meta["ranking"].items()]))
    out.append("<h2>Definitions</h2><dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>"
                                                    for k, v in report["definitions"].items()) + "</dl>")
    out.append("<p>Known-item queries: " + escape(", ".join(meta["known_item_kinds"])) +
               " (method: <code>eval/live.py</code>).</p></body></html>")
    return "\n".join(out)


def markdown_page(md: str, images: dict[str, Path]) -> str:
    """A labelled run's markdown report as one self-contained HTML page: headings, paragraphs,
    pipe tables and ``**bold**``; the PNG plots it links are inlined as base64."""

    def inline(text: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escape(text))

    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Clearance evaluation</title>",
           "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
           "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px}</style></head><body>"]
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, body = table[0], [r for r in table[1:] if not all(set(c) <= set("-:") for c in r)]
            out.append("<table><thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</tbody></table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        flush()
        img = re.fullmatch(r"!\[(.*?)\]\((.*?)\)", line.strip())
        if img:
            path = images.get(img.group(2))
            if path is not None and path.exists():
                data = base64.b64encode(path.read_bytes()).decode()
                out.append(f"<p><img alt='{escape(img.group(1))}' src='data:image/png;base64,{data}'></p>")
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 6)
            out.append(f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    out.append("</body></html>")
    return "\n".join(out)


def write_live(report: dict[str, Any], out_dir: Path, gate: dict[str, Any] | None = None) -> dict[str, Path]:
    """``live-<start>-<identity>.json`` and ``.html`` in ``out_dir``; never replaces a file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = report["meta"]["started_at"].replace(":", "").replace("-", "").split(".")[0]
    stem = f"live-{stamp}-{report['meta']['identity']['hash'][:10]}"
    n = 1
    while (out_dir / f"{stem}.json").exists() or (out_dir / f"{stem}.html").exists():
        n += 1
        stem = f"{stem.rsplit('~', 1)[0]}~{n}"
    paths = {"json": out_dir / f"{stem}.json", "html": out_dir / f"{stem}.html"}
    body = dict(report)
    if gate is not None:
        body["gate"] = gate
    paths["json"].write_text(json.dumps(body, indent=1, sort_keys=True, default=str))
    paths["html"].write_text(render(report, gate))
    return paths
