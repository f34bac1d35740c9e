"""The retry storm's figure: what reached the DB per 100 ms, one row per configuration, with the
guards' state in a strip below each row's bars (`chaos.report.timelines`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaos.report.timelines import plot_timelines


def _retry_storm_row_title(row: Mapping[str, Any]) -> str:
    recovery = row["recovery_s"]
    extra = [f"guards {row['guards']}"] if row.get("guards", "none") != "none" else []
    extra += [f"queue {row['queue']}"] if row.get("queue", "fifo") != "fifo" else []
    name = " ".join([row["policy"], *(f"({e})" for e in extra)])
    return (
        f"{name}: peak after restore {row['post_restore_peak_per_100ms']:,} per 100 ms "
        f"= {row['post_restore_peak_over_capacity']:g}x capacity; recovery "
        + ("incomplete" if recovery is None else f"{recovery:.1f} s")
        + f" (ideal {row['ideal_recovery_s']:.1f} s); amplification {row['amplification']:.1f}; "
        f"lost {row['lost']}"
    )


def plot_retry_storm(doc: Mapping[str, Any], path: Path) -> Path:
    """One row per policy on shared axes: DB arrivals per 100 ms (bars, the DB's own record),
    the cache's attempts towards the DB (line: during the outage they fail fast, so the backoff
    instants show there), the outage shaded and the DB's capacity per 100 ms as a line."""
    rows = doc["rows"]
    keys = rows[0]["keys"] if rows else 0
    outage = doc.get("config", {}).get("outage_s")
    down = f", DB killed for {outage:g} s" if outage is not None else ""
    return plot_timelines(
        rows,
        path,
        title=f"Retry storm, {keys:,} keys{down}: what reached the DB, per configuration",
        row_title=_retry_storm_row_title,
        served=True,
    )
