"""The lab's timelines: event times (wall-clock ns) counted per 100 ms bin from a start.

One formula for every scenario and plot: bin i holds the events in [t0 + i*100ms,
t0 + (i+1)*100ms); a timeline ending at `end_ns` has `bin_index(end_ns, t0) + 1` bins, so the
last event always has a bin.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

BIN_S = 0.1
BIN_NS = round(BIN_S * 1e9)


def bin_index(t_ns: int, t0_ns: int) -> int:
    return (t_ns - t0_ns) // BIN_NS


def bin_count(t0_ns: int, end_ns: int) -> int:
    """Bins from `t0_ns` up to and including the one that holds `end_ns` (at least one)."""
    return max(1, bin_index(end_ns, t0_ns) + 1)


def bins(times_ns: Iterable[int], t0_ns: int, count: int) -> list[int]:
    """Counts of `times_ns` per bin from `t0_ns`; times outside the bins are left out."""
    counts = [0] * count
    for t in times_ns:
        index = bin_index(t, t0_ns)
        if 0 <= index < count:
            counts[index] += 1
    return counts


def busiest_window(sorted_ns: Sequence[int], width_ns: int = BIN_NS) -> int:
    """The most of `sorted_ns` (ascending) within any `width_ns` (a window starting at one of
    them): a burst that a bin's edge would split in two still counts as one."""
    return max(
        (bisect.bisect_left(sorted_ns, t + width_ns) - i for i, t in enumerate(sorted_ns)),
        default=0,
    )


def seconds_since(t_ns: int | None, t0_ns: int) -> float | None:
    """`t_ns` as seconds after `t0_ns`, to the millisecond (None stays None)."""
    return None if t_ns is None else round((t_ns - t0_ns) / 1e9, 3)
