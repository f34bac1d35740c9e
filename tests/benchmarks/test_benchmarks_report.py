"""BENCHMARKS.md is what `benchmarks.report` renders from the committed results: each section's
module writes its part, the report assembles them, and together they reproduce the file
`python -m benchmarks` wrote."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.__main__ import PLOT_NAME
from benchmarks.report import render

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_results_render_the_committed_report() -> None:
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    rendered = render(results, f"benchmarks/{PLOT_NAME}")
    assert rendered == (ROOT / "BENCHMARKS.md").read_text()
