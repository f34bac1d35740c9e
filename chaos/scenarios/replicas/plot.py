"""The replicas scenario's figure, from its document."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaos.report.plotting import RELEASE, save, stacked

Doc = Mapping[str, Any]


def plot_replicas(doc: Doc, path: Path) -> Path:
    """One panel per row on a shared time axis: values served (bars) and typed errors (red
    bars) per 100 ms, each query reaching the DB (orange stems), the replica's kill (a line)."""
    shown = doc["rows"]
    fig, axes = stacked(max(1, len(shown)), 2.4, RELEASE)
    for ax, row in zip(axes[:, 0], shown, strict=False):
        line = row["replica_timeline"]
        bin_s = line["bin_s"]
        xs = [i * bin_s for i in range(len(line["served"]))]
        ax.bar(xs, line["served"], width=bin_s, align="edge", color="#3a6ea5", label="served")
        ax.bar(xs, line["errors"], width=bin_s, align="edge", color="#d62728", label="errors")
        top = max(1, *line["served"], *line["errors"])
        hits = [(x + bin_s / 2, n) for x, n in zip(xs, line["db_arrivals"], strict=True) if n]
        if hits:
            ax.vlines([x for x, _ in hits], 0, top, color="#e08a1e", lw=1.6, label="DB query")
            for x, n in hits:
                if n > 1:
                    ax.annotate(
                        f"x{n}", (x, top), fontsize=8, xytext=(3, -10), textcoords="offset points"
                    )
        if line["kill_s"] is not None:
            ax.axvline(line["kill_s"], color="black", ls="--", lw=1.2, label="holder killed")
        served = row["served_after_s"]
        after = f", served again {served:g} s after the kill" if served is not None else ""
        ax.set_title(
            f"{row['name']}: {row['db_queries']} DB queries, {row['client_errors']:,} errors, "
            f"lost {row['lost']}{after}",
            fontsize=9,
            loc="left",
        )
        ax.set_ylabel("per 100 ms", fontsize=8)
        ax.legend(loc="upper right", fontsize=7, ncol=4)
        ax.grid(axis="y", alpha=0.3)
    config = doc.get("config", {})
    fig.suptitle(
        f"Replicas: {config.get('replicas')} replicas, {config.get('users', 0):,} users on one "
        f"cold key, DB latency {config.get('db_latency_s')} s, lease timeout "
        f"{config.get('lease_timeout_s')} s",
        fontsize=11,
    )
    return save(fig, path)
