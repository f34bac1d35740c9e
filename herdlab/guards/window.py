"""A count over a sliding time window, in per-second buckets: memory is bounded by the window's
length in seconds, whatever the call rate.

The window covers the current second and the `ceil(window_s) - 1` seconds before it, so an event
leaves the count between `ceil(window_s) - 1` and `ceil(window_s)` seconds after it happened.
Single-threaded: touched only from the event loop's thread.
"""

from __future__ import annotations

import math
from collections import deque

from herdlab.guards.base import Clock


class SlidingCount:
    """`add(n)` counts n events now; `total()` is the events counted within the window."""

    def __init__(self, window_s: float, clock: Clock) -> None:
        self.seconds = max(1, math.ceil(window_s))
        self._clock = clock
        # (second, events in that second), oldest first; at most `seconds` entries.
        self._buckets: deque[list[int]] = deque()
        self._total = 0

    def add(self, n: int = 1) -> None:
        now = self._expire()
        if self._buckets and self._buckets[-1][0] == now:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([now, n])
        self._total += n

    def total(self) -> int:
        self._expire()
        return self._total

    def _expire(self) -> int:
        now = math.floor(self._clock())
        oldest_kept = now - self.seconds + 1
        while self._buckets and self._buckets[0][0] < oldest_kept:
            self._total -= self._buckets.popleft()[1]
        return now
