"""A server's capacity: a concurrency limit in front of a bounded wait queue (the DB's, and the
server interceptor's, `herdlab.server.interceptor`).

A query takes a slot if one is free and nobody is waiting; otherwise it waits in the queue if
the queue has room; otherwise it is rejected at once (`Rejected`, which the server turns into
RESOURCE_EXHAUSTED). Which waiter a freed slot goes to, and whether a waiter is shed before one
does (`Shed`), is the queue discipline's call (`herdlab.server.queueing`; FIFO by default). A waiter
whose caller goes away (its task is cancelled) leaves the queue without taking a slot. Limits
and the discipline can change at runtime; a smaller limit takes effect as slots free.

The limit is a number of slots, or one of the guards' limit algorithms
(`herdlab.guards.limit_algorithms`: static, AIMD, Vegas), read at every admission; whoever
releases a slot may give the algorithm its sample first (`sample`).

Slot time is kept exactly: `slot_seconds` is the integral of the slots in use over time, i.e.
the seconds each slot was held from taking it to releasing it, whatever the outcome, holds still
running included.

Single-threaded by design: all state is changed only from the event loop's thread. The metrics
endpoint reads it from its own thread; the slot count and its time integral sit in one tuple,
replaced whole, so such a reader sees a consistent pair and a never-decreasing `slot_seconds`.
"""

from __future__ import annotations

import asyncio

from herdlab.guards.base import Range
from herdlab.guards.limit_algorithms import LimitAlgorithm, StaticLimit
from herdlab.server.queueing import Clock, Discipline, Fifo, MonotonicClock, WaitQueue

# A static limit given as a number of slots (the DB's `--concurrency` allows as many).
SLOTS = Range(1, 1_000_000)


class Rejected(Exception):
    """The wait queue was full."""


class Capacity:
    def __init__(
        self,
        concurrency: int | LimitAlgorithm,
        queue: int,
        discipline: Discipline | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.algorithm = _algorithm(concurrency)
        self.queue = queue
        self._clock = clock or MonotonicClock()
        self._waiting = WaitQueue(discipline or Fifo(), self._clock)
        # (slots in use, slot-seconds up to `since`, since): replaced whole, never mutated.
        self._slots: tuple[int, float, float] = (0, 0.0, self._clock.now())

    @property
    def concurrency(self) -> int:
        """The limit in force: slots that may be held at once."""
        return self.algorithm.limit

    @property
    def in_flight(self) -> int:
        return self._slots[0]

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def standing(self) -> bool:
        """The queue has been non-empty, without a break, for the discipline's interval."""
        return self._waiting.standing()

    @property
    def slot_seconds(self) -> float:
        """Seconds of slot time used since the start (holds still running included)."""
        in_use, seconds, since = self._slots
        return seconds + in_use * (self._clock.now() - since)

    def resize(self, concurrency: int | LimitAlgorithm, queue: int) -> None:
        self.algorithm = _algorithm(concurrency)
        self.queue = queue
        self._hand_over()

    def set_discipline(self, discipline: Discipline) -> None:
        """Serves the queue by `discipline` from now on (waiters keep the limit they joined
        with)."""
        self._waiting.discipline = discipline

    async def acquire(self) -> bool:
        """Takes a slot, waiting in the queue if needed; returns whether it waited. Raises
        `Rejected` if the queue is full, `queueing.Shed` if the discipline shed it meanwhile."""
        if self.in_flight < self.concurrency and not self._waiting:
            self._take(+1)
            return False
        if len(self._waiting) >= self.queue:
            raise Rejected(f"queue full ({self.queue} waiting, {self.in_flight} in flight)")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter_id = self._waiting.push(future)
        try:
            await future
        except asyncio.CancelledError:
            if (
                not self._waiting.remove(waiter_id)
                and future.done()
                and not future.cancelled()
                and future.exception() is None
            ):
                # The slot was handed to us in the same tick as the cancel: give it back.
                self.release()
            raise
        return True

    def sample(self, rtt_s: float, in_flight: int, dropped: bool) -> None:
        """Gives the limit algorithm one finished call's sample (`LimitAlgorithm.on_sample`)."""
        self.algorithm.on_sample(rtt_s, in_flight, dropped)

    def release(self) -> None:
        self._take(-1)
        self._hand_over()

    def _take(self, slots: int) -> None:
        in_use, seconds, since = self._slots
        now = self._clock.now()
        self._slots = (in_use + slots, seconds + in_use * (now - since), now)

    def _hand_over(self) -> None:
        while self.in_flight < self.concurrency and (future := self._waiting.pop()) is not None:
            if not future.done():
                self._take(+1)
                future.set_result(None)


def _algorithm(concurrency: int | LimitAlgorithm) -> LimitAlgorithm:
    if isinstance(concurrency, LimitAlgorithm):
        return concurrency
    return StaticLimit(concurrency, allowed=SLOTS)
