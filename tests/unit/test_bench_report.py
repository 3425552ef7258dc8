"""BENCHMARKS.md is what `make bench` renders (``bench.report``): the generated tables from
``bench/results`` and the studies from ``bench/studies.md``. A figure edited into BENCHMARKS.md
alone would be dropped by the next `make bench`, so the committed file must equal the render,
apart from the line naming the machine that rendered it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import render

ROOT = Path(__file__).resolve().parents[2]


def _without_machine(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("Machine: ")]


def test_benchmarks_md_is_the_render_of_results_and_studies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    rendered = _without_machine(render(ROOT / "bench" / "results"))
    committed = _without_machine((ROOT / "BENCHMARKS.md").read_text())
    assert rendered == committed, "edit bench/studies.md (or the results), then run `python -m bench.report`"
    assert any(line.startswith("## Beside a peer") for line in committed)
