"""Figures drawn to files, for reports and benchmarks.

matplotlib's object API (a `Figure` of its own, no pyplot state, no display backend), loaded on
first use: importing it costs about a third of a second, which commands that draw nothing
(`chaos kill db`, `chaos status`) should not pay.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110


OPEN_LOOP = "seconds since the open loop started (100 ms bins)"
RELEASE = "seconds since the herd's release"


def new_figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in))


def stacked(rows: int, row_in: float, time: str, *, sharey: bool = False) -> tuple[Figure, Any]:
    """A figure 12 in wide of `rows` axes one above the other on a shared x axis (labelled
    `time`: what its seconds count from), and with `sharey` a shared y axis, each `row_in` tall,
    with room for a title: the figure and its axes (`axes[i, 0]`)."""
    fig = new_figure(12, row_in * rows + 0.9)
    axes = fig.subplots(rows, 1, sharex=True, sharey=sharey, squeeze=False)
    axes[-1, 0].set_xlabel(time)
    return fig, axes


def save(fig: Figure, path: Path) -> Path:
    """Lays `fig` out and writes it to `path` (PNG by its suffix), creating the folder."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path
