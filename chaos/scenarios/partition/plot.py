"""The partition scenario's figure: its rows on the reconnect storm's axes (herd attempts,
responses and reconnect attempts per 100 ms; the fault shaded from its start to its heal)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaos.scenarios.reconnect_storm.plot import plot_timelines, secs


def _title(row: Mapping[str, Any]) -> str:
    keepalive = "keepalive" if row["keepalive"] else "no keepalive"
    return (
        f"{row['fault']}, {keepalive}: first error {secs(row['noticed_s'])} after the fault, "
        f"{row['stayed_ready']} channels stayed READY through it, all READY again "
        f"{secs(row['all_ready_after_heal_s'])} after the heal, {row['reconnect_attempts']} "
        f"reconnects, lost {row['lost']}"
    )


def plot_partition(doc: Mapping[str, Any], path: Path) -> None:
    config = doc["config"]
    plot_timelines(
        doc["rows"],
        _title,
        f"Partition vs kill: {config['users']:,} users on {config['channels']} channels; the "
        "cache killed (connections reset) or partitioned (connections left half-open), then "
        "restored or healed",
        path,
        shaded="cache killed or partitioned",
    )
