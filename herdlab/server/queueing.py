"""The waiting line and its queue disciplines, under the name the server's users import them by;
their home is `herdlab.queueing` (shared with the client's `limit` guard)."""

from herdlab.queueing import (
    DEFAULT_INTERVAL_S,
    DEFAULT_TARGET_S,
    KINDS,
    NAMES,
    AdaptiveLifo,
    Clock,
    CoDel,
    Discipline,
    Fifo,
    MonotonicClock,
    Shed,
    Timer,
    WaitQueue,
    discipline,
)

__all__ = [
    "DEFAULT_INTERVAL_S",
    "DEFAULT_TARGET_S",
    "KINDS",
    "NAMES",
    "AdaptiveLifo",
    "Clock",
    "CoDel",
    "Discipline",
    "Fifo",
    "MonotonicClock",
    "Shed",
    "Timer",
    "WaitQueue",
    "discipline",
]
