"""The reconnect-at-scale figure: per row, each second from the herd's first connect, the
connections the proxy was offered, those it passed to the cache, those the cache answered, those
whose client gave up first (wasted handshakes), those the proxy reset without passing them (a
gate refused them or held them past its hold, or the cache was down), and the herd's connections
that turned READY, with the cache's CPU (cores) on a second axis; the release and the storm's
start marked (a document written before `refused` and `ready` were recorded is drawn without
them)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaos.report.plotting import save, stacked

SOLID = {"drawstyle": "steps-post"}
DASHED = {"drawstyle": "steps-post", "linestyle": "--", "linewidth": 0.8}
SERIES = (
    ("accepted", "offered to the proxy", "#bbbbbb", SOLID),
    ("passed", "passed to the cache", "#1f77b4", SOLID),
    ("answered", "answered by the cache", "#2ca02c", SOLID),
    ("abandoned", "client gave up first (wasted)", "#d62728", SOLID),
    ("refused", "reset by the proxy, not passed", "#ff7f0e", SOLID),
    ("ready", "herd connections READY", "black", DASHED),
)


def ready_text(row: Mapping[str, Any]) -> str:
    """`12.3s (2.1x ideal)`, or `not within the run` when a connection never was again."""
    ready = row["time_to_all_ready_s"]
    if ready is None:
        return "not within the run"
    return f"{ready:.1f}s ({row['reconnect_over_ideal']}x ideal)"


def _title(row: Mapping[str, Any]) -> str:
    return (
        f"{row['trigger']} / {row['cure']}: peak {row['peak_connect_attempts_per_s']}/s to the "
        f"cache ({row['peak_over_capacity']}x capacity {row['handshake_capacity_per_s']}/s), all "
        f"READY {ready_text(row)} after the storm, wasted {row['wasted_handshakes']}, "
        f"lost {row['lost']}"
    )


def plot_reconnect_at_scale(doc: Mapping[str, Any], path: Path) -> None:
    rows = [r for r in doc["rows"] if r.get("timeline")]
    if not rows:
        return
    fig, axes = stacked(len(rows), 2.4, "seconds since the herd's first connect")
    for ax, row in zip(axes[:, 0], rows, strict=True):
        timeline = row["timeline"]
        seconds = range(len(timeline["accepted"]))
        for key, label, color, style in SERIES:
            if key in timeline:
                ax.plot(seconds, timeline[key], label=label, color=color, **style)
        ax.set_ylabel("connections/s")
        for at, label in ((timeline["t0_s"], "release"), (timeline["storm_s"], "storm")):
            if at is not None:
                ax.axvline(at, color="black", linestyle=":", linewidth=1)
                ax.text(at, ax.get_ylim()[1] * 0.92, f" {label}", fontsize=7)
        cpu = [c if c is not None else float("nan") for c in timeline["cpu"]]
        twin = ax.twinx()
        twin.plot(seconds, cpu, color="#9467bd", linewidth=1, label="cache CPU (cores)")
        twin.set_ylabel("cores")
        twin.set_ylim(bottom=0)
        ax.set_title(_title(row), fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle(
        f"Reconnect at scale: {doc['config']['connections']:,} connections"
        f"{' over TLS' if doc['config']['tls'] else ''}, each row on its own stack",
        fontsize=10,
    )
    save(fig, path)
