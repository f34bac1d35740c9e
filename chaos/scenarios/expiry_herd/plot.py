"""The expiry herd's figure: one row per freshness policy on a shared time axis (seconds since
the open loop started, 100 ms bins), from its document."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaos.report.plotting import OPEN_LOOP, save, stacked


def plot_expiry_herd(doc: Mapping[str, Any], path: Path) -> Path:
    """What reached the DB per 100 ms, one row per freshness policy, on shared axes: with warm
    keys every query is a refresh, so the bars are the keys' expiry."""
    rows = doc["rows"]
    config = doc.get("config", {})
    fig, axes = stacked(max(1, len(rows)), 1.9, OPEN_LOOP, sharey=True)
    for ax, row in zip(axes[:, 0], rows, strict=False):
        line = row["timeline"]
        bin_s = line["bin_s"]
        arrivals = line["db_arrivals"]
        ax.bar(
            [i * bin_s for i in range(len(arrivals))],
            arrivals,
            width=bin_s,
            align="edge",
            color="#e08a1e",
            label="DB arrivals",
        )
        ax.set_title(
            f"{row['freshness']}: peak {row['expiry_peak_per_100ms']} per 100 ms, at most "
            f"{row['max_concurrent_db_queries_per_key']} per key at once, "
            f"{row['db_queries']:,} DB queries",
            fontsize=9,
            loc="left",
        )
        ax.set_ylabel("per 100 ms", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"Expiry herd: {config.get('keys')} keys warmed together, TTL {config.get('ttl_s'):g} s, "
        f"{config.get('rate_per_s'):g} arrivals/s, recompute {config.get('db_latency_s'):g} s",
        fontsize=11,
    )
    return save(fig, path)
