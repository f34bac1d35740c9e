"""The reconnect storm's figure: one row per variant on a shared time axis, from its document.
The same axes serve every document whose rows carry a `reconnect_timeline` (`plot_timelines`;
the partition scenario draws its rows on them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from chaos.report.plotting import RELEASE, save, stacked


def secs(value: float | None) -> str:
    return "never" if value is None else f"+{value:.2f} s"


def plot_timelines(
    rows: Sequence[Mapping[str, Any]],
    title_of: Callable[[Mapping[str, Any]], str],
    suptitle: str,
    path: Path,
    *,
    shaded: str = "cache down",
) -> None:
    """One row per variant on a shared time axis (seconds since the herd's release): herd attempts
    (grey bars) and served responses (blue line) per 100 ms on the left axis, reconnect attempts
    per 100 ms (red stems) on the right, the outage shaded, first success and all-READY marked."""
    fig, axes = stacked(len(rows), 2.7, RELEASE)
    for ax, row in zip(axes[:, 0], rows, strict=True):
        line = row["timeline"]
        bin_s = line["bin_s"]
        xs = [i * bin_s for i in range(len(line["herd_attempts"]))]
        ax.bar(xs, line["herd_attempts"], width=bin_s, align="edge", color="#b8c2cc", label="herd")
        ax.step(xs, line["served"], where="post", color="#1f5fa8", lw=0.8, label="served")
        ax.set_ylabel("per 100 ms")
        ax.set_ylim(0, max(1, *line["herd_attempts"]) * 1.35)  # room for the legend
        start, end = line["outage"]
        if start is not None and end is not None:
            ax.axvspan(start, end, color="#e8489a", alpha=0.12, label=shaded)
        if line["first_success_s"] is not None:
            ax.axvline(line["first_success_s"], color="#138a36", lw=1.6, label="first success")
        if line["all_channels_ready_s"] is not None:
            ax.axvline(
                line["all_channels_ready_s"], color="#138a36", ls="--", lw=1.2, label="all READY"
            )
        twin = ax.twinx()
        hits = [(x + bin_s / 2, n) for x, n in zip(xs, line["reconnects"], strict=True) if n]
        if hits:
            centres, counts = zip(*hits, strict=True)
            twin.vlines(centres, 0, counts, color="#c8102e", lw=1.4)
            twin.plot(centres, counts, "o", color="#c8102e", ms=3, label="reconnect attempts")
        twin.set_ylim(0, max(2, *line["reconnects"]) * 1.35)
        twin.set_ylabel("reconnects\nper 100 ms", color="#c8102e")
        ax.set_title(title_of(row), fontsize=8.5, loc="left")
        handles, labels = ax.get_legend_handles_labels()
        twin_handles, twin_labels = twin.get_legend_handles_labels()
        ax.legend(
            handles + twin_handles, labels + twin_labels, loc="upper right", fontsize=7, ncol=6
        )
    fig.suptitle(suptitle)
    save(fig, path)


def _title(row: Mapping[str, Any]) -> str:
    return (
        f"{row['reconnect']} reconnect backoff ({row['backoff']['initial_ms']:g} ms initial, "
        f"{row['backoff']['max_ms'] / 1000:g} s max), herd retry {row['policy']}: "
        f"first success {secs(row['time_to_first_success_s'])}, all {row['channels']} "
        f"channels READY {secs(row['time_to_all_channels_ready_s'])}, "
        f"{row['reconnect_attempts']} reconnects, "
        f"{row['failed_after_restore']:,} failed after the restart, lost {row['lost']}"
    )


def plot_reconnect_storm(doc: Mapping[str, Any], path: Path) -> None:
    """The reconnect storm's variants on the shared axes (`plot_timelines`)."""
    config = doc["config"]
    plot_timelines(
        doc["rows"],
        _title,
        f"Reconnect storm: {config['users']:,} users on {config['channels']} channels, cache "
        f"SIGKILLed for {config['outage_s']:g} s (+ restart); times are from the moment the "
        "cache listens again",
        path,
    )
