"""Figures drawn to files, for reports and benchmarks.

matplotlib's object API (a `Figure` of its own, no pyplot state, no display backend), loaded on
first use: importing it costs about a third of a second, which commands that draw nothing
(`chaos kill db`, `chaos status`) should not pay.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110


def new_figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in))


def save(fig: Figure, path: Path) -> Path:
    """Lays `fig` out and writes it to `path` (PNG by its suffix), creating the folder."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path
