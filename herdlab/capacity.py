"""A concurrency limit in front of a bounded waiting line: the one home of that concept, shared by
the server's capacity model (`herdlab.server.capacity.Capacity`: the DB's, and the server
interceptor's, `herdlab.server.interceptor`) and the client's `limit` guard
(`herdlab.guards.limit`).

A caller takes a slot if one is free and nobody is waiting; otherwise it waits in the line if the
line has room; otherwise it is rejected at once (`Rejected`: the server answers
RESOURCE_EXHAUSTED, the guard refuses the call). Which waiter a freed slot goes to, and whether a
waiter is shed before one does (`Shed`), is the line's discipline's call (`herdlab.queueing`;
FIFO by default). A waiter whose caller gives up (its task is cancelled, or its `timeout_s` runs
out) leaves the line without taking a slot, even when the slot was handed to it in the same tick.
The discipline can change at runtime; a smaller limit takes effect as slots free.

The limit is one of the guards' limit algorithms (`herdlab.guards.limit_algorithms`: static,
AIMD, Vegas), read at every admission; whoever releases a slot may give the algorithm its sample
first (`sample`). This module does not import the guards at runtime: the guards import it, and
`herdlab.server`, which imports the guards, builds on it.

Slot time is kept exactly: `slot_seconds` is the integral of the slots in use over time, i.e.
the seconds each slot was held from taking it to releasing it, whatever the outcome, holds still
running included.

Single-threaded by design: all state is changed only from the event loop's thread. The metrics
endpoint reads it from its own thread; the slot count and its time integral sit in one tuple,
replaced whole, so such a reader sees a consistent pair and a never-decreasing `slot_seconds`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from herdlab.queueing import Clock, Discipline, Fifo, MonotonicClock, WaitQueue

if TYPE_CHECKING:
    from herdlab.guards.limit_algorithms import LimitAlgorithm


class Rejected(Exception):
    """The waiting line was full."""


@dataclass(frozen=True)
class Slot:
    """A slot taken: whether its caller waited for it, and the slots in use once it was taken
    (itself included: the limit algorithms' `in_flight` sample)."""

    waited: bool
    in_flight: int


class Limiter:
    """See the module docstring. `queue` bounds the line; `clock` is injected by tests."""

    def __init__(
        self,
        algorithm: LimitAlgorithm,
        queue: int,
        discipline: Discipline | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.algorithm = algorithm
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
        """The line has been non-empty, without a break, for the discipline's interval."""
        return self._waiting.standing()

    @property
    def slot_seconds(self) -> float:
        """Seconds of slot time used since the start (holds still running included)."""
        in_use, seconds, since = self._slots
        return seconds + in_use * (self._clock.now() - since)

    def set_discipline(self, discipline: Discipline) -> None:
        """Serves the line by `discipline` from now on (waiters keep the limit they joined
        with)."""
        self._waiting.discipline = discipline

    async def acquire(self) -> bool:
        """Takes a slot, waiting in the line if needed; returns whether it waited. Raises
        `Rejected` if the line is full, `queueing.Shed` if the discipline shed it meanwhile."""
        return (await self.take()).waited

    async def take(self, timeout_s: float | None = None) -> Slot:
        """Takes a slot as `acquire` does, waiting at most `timeout_s` (None: until the caller
        gives up): TimeoutError when no slot came in time, at once (without joining the line)
        when `timeout_s` is not above 0 and no slot is free."""
        if self.in_flight < self.concurrency and not self._waiting:
            self._take(+1)
            return Slot(waited=False, in_flight=self.in_flight)
        if len(self._waiting) >= self.queue:
            raise Rejected(f"queue full ({self.queue} waiting, {self.in_flight} in flight)")
        if timeout_s is not None and not timeout_s > 0:
            raise TimeoutError
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiter_id = self._waiting.push(future)
        async with asyncio.timeout(timeout_s):
            return Slot(waited=True, in_flight=await self._wait(waiter_id, future))

    async def _wait(self, waiter_id: int, future: asyncio.Future[int]) -> int:
        try:
            return await future
        except asyncio.CancelledError:
            if not self._waiting.remove(waiter_id) and _granted(future):
                # The slot was handed to us in the same tick as the cancel: give it back.
                self.release()
            raise

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
                future.set_result(self.in_flight)


def _granted(future: asyncio.Future[int]) -> bool:
    """The waiter's future carries a slot (neither cancelled nor shed)."""
    return future.done() and not future.cancelled() and future.exception() is None
