"""The 100 ms timeline figure: one row per result on a shared time axis, what reached the DB as
bars, and the guards' state, where rows carry it, in a strip of its own below each row's bars.

Scenarios whose rows measured `timeline` draw with it (the retry storm), and so does any
experiment without a kind of its own (`plot_experiment`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from chaos.report.plotting import RELEASE, new_figure, save

ARRIVALS = "DB arrivals"  # the bars' label, first in the legend
# The guards' state drawn in a row's strip, by `guard_timeline` key, with its label.
GUARD_SERIES = (
    ("limit_limit", "concurrency limit"),
    ("limit_in_flight", "calls in flight (limit)"),
    ("breaker_state", "breaker (0 closed, 1 half-open, 2 open)"),
    ("budget_tokens", "retry budget tokens"),
    ("throttle_rejection_probability", "throttle rejection probability"),
)
GUARD_COLORS = ("#6a3d9a", "#b15928", "#17becf", "#7f7f7f", "#bcbd22")
ROW_IN = 2.4
STRIP_IN = 0.9


def _guards_drawn(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    guards = row.get("guard_timeline") or {}
    return [(k, label) for k, label in GUARD_SERIES if guards.get(k)]


def plot_timelines(
    rows: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    title: str,
    row_title: Callable[[Mapping[str, Any]], str],
    served: bool = False,
) -> Path:
    """One row per result on shared axes, from each `row["timeline"]`: its `db_arrivals` as
    bars, its `cache_attempts` as a step line and (`served`) the values users got per bin as a
    second line, the `outage` ([start_s, end_s]) shaded,
    `db_capacity_per_bin`, if present, as a horizontal line; below each row whose
    `row["guard_timeline"]` has any series, a strip of the guards' state on the same time axis."""
    strips = any(_guards_drawn(row) for row in rows)
    count = max(1, len(rows))
    fig = new_figure(12, (ROW_IN + (STRIP_IN if strips else 0)) * count + 0.9)
    ratios = [ROW_IN, STRIP_IN] * count if strips else [ROW_IN] * count
    axes = fig.subplots(len(ratios), 1, sharex=True, squeeze=False, height_ratios=ratios)
    step = 2 if strips else 1
    bar_axes = [axes[i * step, 0] for i in range(count)]
    for ax in bar_axes[1:]:
        ax.sharey(bar_axes[0])
    for index, row in enumerate(rows):
        ax = bar_axes[index]
        timeline = row["timeline"]
        bin_s = timeline["bin_s"]
        values = timeline["db_arrivals"]
        xs = [i * bin_s for i in range(len(values))]
        ax.bar(xs, values, width=bin_s, align="edge", color="#3a6ea5", label=ARRIVALS)
        ax.step(
            xs,
            timeline["cache_attempts"],
            where="post",
            color="#e08a1e",
            lw=0.8,
            alpha=0.8,
            label="cache->DB attempts",
        )
        if served and "served" in timeline:
            ax.step(xs, timeline["served"], where="post", color="#2ca02c", lw=0.9, label="goodput")
        if timeline.get("outage"):
            start, end = timeline["outage"]
            ax.axvspan(start, end, color="#d62728", alpha=0.1, label="DB down")
        capacity = timeline.get("db_capacity_per_bin")
        if capacity:
            ax.axhline(
                capacity,
                color="#d62728",
                lw=1.2,
                ls="--",
                label=f"DB capacity ({capacity:g} per bin)",
            )
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: labels[i] != ARRIVALS)
        ax.legend(
            [handles[i] for i in order],
            [labels[i] for i in order],
            loc="upper right",
            fontsize=7,
            ncol=4,
        )
        ax.set_title(row_title(row), fontsize=9, loc="left")
        ax.set_ylabel("per 100 ms", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        if strips:
            _guard_strip(axes[index * step + 1, 0], row)
    axes[-1, 0].set_xlabel(RELEASE)
    fig.suptitle(title, fontsize=11)
    return save(fig, path)


def _guard_strip(ax: Any, row: Mapping[str, Any]) -> None:
    """The guards' state of one row, under its bars; an empty strip says there was none."""
    guards = row.get("guard_timeline") or {}
    drawn = _guards_drawn(row)
    for (key, label), color in zip(drawn, GUARD_COLORS, strict=False):
        ax.step(guards["t_s"], guards[key], where="post", color=color, lw=1.0, label=label)
    if drawn:
        ax.legend(loc="upper right", fontsize=7, ncol=3)
    else:
        ax.text(0.01, 0.5, "no guard", transform=ax.transAxes, fontsize=7, va="center")
        ax.set_yticks([])
    ax.set_ylabel("guard state", fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def plot_experiment(doc: Mapping[str, Any], path: Path) -> Path | None:
    """The timeline figure of any experiment whose rows measured `timeline`."""
    rows = [r for r in doc.get("rows", []) if "db_arrivals" in r.get("timeline", {})]
    if not rows:
        return None
    return plot_timelines(
        rows,
        path,
        title=doc.get("experiment", {}).get("title", "experiment"),
        row_title=lambda r: ", ".join(f"{k}={v}" for k, v in r.get("variant", {}).items()),
    )
