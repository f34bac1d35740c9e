"""The stale outage's figure: one row per stale-if-error bound on a shared time axis (seconds
since the open loop started, 100 ms bins), from its document."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaos.report.plotting import OPEN_LOOP, save, stacked


def plot_stale_outage(doc: Mapping[str, Any], path: Path) -> Path:
    """What users got per 100 ms, one row per stale-if-error bound: fresh values, stale values and
    errors stacked, the DB's outage shaded."""
    rows = doc["rows"]
    config = doc.get("config", {})
    fig, axes = stacked(max(1, len(rows)), 2.2, OPEN_LOOP, sharey=True)
    for ax, row in zip(axes[:, 0], rows, strict=False):
        line = row["answers"]
        bin_s = line["bin_s"]
        xs = [i * bin_s for i in range(len(line["fresh"]))]
        fresh, stale, errors = line["fresh"], line["stale"], line["errors"]
        ax.bar(xs, fresh, width=bin_s, align="edge", color="#3a6ea5", label="fresh")
        ax.bar(xs, stale, width=bin_s, align="edge", bottom=fresh, color="#f2b134", label="stale")
        below = [f + s for f, s in zip(fresh, stale, strict=True)]
        ax.bar(xs, errors, width=bin_s, align="edge", bottom=below, color="#d62728", label="error")
        if len(line["outage"]) == 2 and None not in line["outage"]:
            ax.axvspan(*line["outage"], color="#d62728", alpha=0.08, label="DB down")
        sie = row["stale_if_error_s"]
        ax.set_title(
            f"stale-if-error {f'{sie:g} s' if sie else 'off'}: availability "
            f"{row['availability']}, {row['stale_served']:,} stale (oldest "
            f"{row['max_stale_age_s']:g} s)",
            fontsize=9,
            loc="left",
        )
        ax.legend(loc="upper right", fontsize=7, ncol=4)
        ax.set_ylabel("answers per 100 ms", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"Stale outage: {config.get('keys')} warm keys, TTL {config.get('ttl_s'):g} s, "
        f"{config.get('rate_per_s'):g} arrivals/s, DB down {config.get('outage_s'):g} s",
        fontsize=11,
    )
    return save(fig, path)
