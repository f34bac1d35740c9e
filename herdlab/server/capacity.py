"""A server's capacity: the shared limiter (`herdlab.capacity`, a concurrency limit in front of a
bounded waiting line, which the client's `limit` guard uses too) as the DB and the server
interceptor (`herdlab.server.interceptor`) use it: the limit may be given as a number of slots,
and limit and line bound can change at runtime (`resize`).

Everything else (admission, rejection when the line is full, the disciplines, cancellation, slot
time) is the limiter's; `Rejected` is re-exported from there.
"""

from __future__ import annotations

from herdlab.capacity import Limiter, Rejected
from herdlab.guards.base import Range
from herdlab.guards.limit_algorithms import LimitAlgorithm, StaticLimit
from herdlab.queueing import Clock, Discipline

__all__ = ["SLOTS", "Capacity", "Rejected"]

# A static limit given as a number of slots (the DB's `--concurrency` allows as many).
SLOTS = Range(1, 1_000_000)


class Capacity(Limiter):
    """A `Limiter` whose limit is a number of slots or a limit algorithm."""

    def __init__(
        self,
        concurrency: int | LimitAlgorithm,
        queue: int,
        discipline: Discipline | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(_algorithm(concurrency), queue, discipline, clock)

    def resize(self, concurrency: int | LimitAlgorithm, queue: int) -> None:
        self.algorithm = _algorithm(concurrency)
        self.queue = queue
        self._hand_over()


def _algorithm(concurrency: int | LimitAlgorithm) -> LimitAlgorithm:
    if isinstance(concurrency, LimitAlgorithm):
        return concurrency
    return StaticLimit(concurrency, allowed=SLOTS)
