"""Render ``BATTERY.md`` from ``battery/results/*.json`` (every figure with its command)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from battery.result import results_dir

ORDER = ["leak_duel", "state_machine", "tokens", "crash", "hostile", "fuzz", "load", "restart", "writes"]


def render(results: list[dict]) -> str:
    lines = ["# Reliability and security battery", "",
             "Every item is one command that exits non-zero on a violation; `make battery` runs them all",
             "and renders this file from `battery/results/*.json`. Fast versions of each run in `make test`.", ""]
    for r in results:
        verdict = "PASS" if r["passed"] else "**FAIL**"
        lines += [f"## {r['name']} — {verdict}", "", f"`{r['command']}` ({r.get('duration_s')} s, {r['when']})", "",
                  "| figure | value |", "|---|---:|"]
        for k, v in r["figures"].items():
            lines.append(f"| {k} | {json.dumps(v) if isinstance(v, (dict, list)) else v} |")
        if r.get("violations"):
            lines += ["", "Violations (first 50):", ""] + [f"- {v}" for v in r["violations"]]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    found = {p.stem: json.loads(p.read_text()) for p in sorted(results_dir().glob("*.json"))}
    ordered = [found[k] for k in ORDER if k in found] + [v for k, v in found.items() if k not in ORDER]
    Path("BATTERY.md").write_text(render(ordered))
    missing = [k for k in ORDER if k not in found]
    if missing:
        print(f"missing results: {', '.join(missing)}", file=sys.stderr)
    failed = [r["name"] for r in ordered if not r["passed"]]
    print(f"{len(ordered)} results, failed: {failed or 'none'}")
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
