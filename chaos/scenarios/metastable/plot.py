"""The metastable failure's figure: goodput and DB arrivals per 100 ms, one row per
configuration, the trigger shaded."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaos.engine.timeline import BIN_S
from chaos.report.plotting import OPEN_LOOP, save, stacked


def _metastable_row_title(row: Mapping[str, Any]) -> str:
    back = row["back_to_90pct_s"]
    return (
        f"{row['configuration']}: below half capacity for {row['collapsed_s']:g} s after the "
        "trigger; back to 90% "
        + ("never" if back is None else f"after {back:g} s")
        + f"; lost {row['lost']}"
    )


def plot_metastable(doc: Mapping[str, Any], path: Path) -> Path:
    """One row per configuration on shared axes: goodput per 100 ms as a rate (bars), what
    reached the DB (a step line), the DB's capacity (dashed) and the trigger (shaded)."""
    rows = doc["rows"]
    config = doc.get("config", {})
    fig, axes = stacked(max(1, len(rows)), 2.2, OPEN_LOOP, sharey=True)
    for ax, row in zip(axes[:, 0], rows, strict=False):
        goodput = row["goodput_per_s"]
        xs = [i * BIN_S for i in range(len(goodput))]
        ax.bar(xs, goodput, width=BIN_S, align="edge", color="#3a6ea5", label="goodput")
        arrivals = row["db_arrivals_per_s"]
        ax.step(
            [i * BIN_S for i in range(len(arrivals))],
            arrivals,
            where="post",
            color="#e08a1e",
            lw=0.7,
            alpha=0.8,
            label="DB arrivals",
        )
        if len(row["trigger_s"]) == 2:
            ax.axvspan(*row["trigger_s"], color="#d62728", alpha=0.1, label="trigger")
        capacity = row["db_capacity_per_s"]
        ax.axhline(
            capacity, color="#d62728", lw=1.2, ls="--", label=f"DB capacity ({capacity:g}/s)"
        )
        ax.legend(loc="upper right", fontsize=7, ncol=4)
        ax.set_title(_metastable_row_title(row), fontsize=9, loc="left")
        ax.set_ylabel("per second", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    rate = config.get("rate_per_s")
    trigger = " then ".join(config.get("trigger", []))
    fig.suptitle(
        f"Metastable failure: {rate:g} arrivals/s, trigger: {trigger}; goodput per configuration",
        fontsize=11,
    )
    return save(fig, path)
