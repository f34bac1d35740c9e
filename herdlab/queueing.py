"""The waiting line and its queue disciplines: which waiter a freed slot goes to, and which waiter
is shed. Their one home: the limiter (`herdlab.capacity`) waits its callers here, and with it the
DB's and the server interceptor's capacity (`herdlab.server.capacity`) and the client's `limit`
guard (`herdlab.guards.limit`, always FIFO). `herdlab.server.queueing` re-exports these names.

The limiter counts slots and bounds the line; the line here holds the waiters (queries, calls)
in arrival order and asks its discipline two things:

- when a query joins: how long it may wait (`max_wait`; None: until its caller gives up);
- when a slot frees: whether it goes to the newest waiter rather than the oldest (`newest_first`).

Both answers may depend on whether the queue is *standing*: it has been non-empty, without a
break, for at least `interval` seconds (Maurer, "Fail at Scale", ACM Queue 2015: a queue that
never empties is a standing queue, and only adds latency). The disciplines:

- `fifo`: oldest first, nobody shed. The DB's behaviour before disciplines existed.
- `codel`: oldest first. When a query joins, its limit is `target` if the queue is standing at
  that moment, else `interval` (the queue is empty, or has been non-empty for less than
  `interval`). A query still waiting `limit` seconds after it joined is shed (`Shed`, answered
  RESOURCE_EXHAUSTED). This is Fail at Scale's CoDel; the names and defaults (target 5 ms,
  interval 100 ms) are RFC 8289's, whose control law (sojourn time measured at dequeue, drops
  spaced `interval / sqrt(count)` apart) is not implemented here.
- `lifo` (adaptive LIFO, Fail at Scale): oldest first while the queue is not standing; newest
  first while it stands, so the queries most likely to still have a caller are served and the
  oldest wait for the queue to drain. Nobody is shed by the discipline.

A waiter's limit is fixed when it joins (a later change of discipline or interval applies to
later arrivals); its order is decided when a slot frees, with the discipline in force then.
Shedding needs no background loop: a limited waiter gets one timer, cancelled when it leaves the
queue, so there are never more live timers than waiters, and the queue is bounded.

Time is a `Clock` (monotonic seconds plus timers), injected so tests move it by hand.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

DEFAULT_TARGET_S = 0.005
DEFAULT_INTERVAL_S = 0.1


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic time in seconds, and a timer that calls back at a moment of that time."""

    def now(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer: ...


class MonotonicClock:
    """`time.monotonic()`, with timers on the running event loop. `now` is safe to call from
    any thread (the metrics endpoint reads the DB's state from its own)."""

    def now(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        delay = max(0.0, when - time.monotonic())
        return asyncio.get_running_loop().call_later(delay, callback)


class Shed(Exception):
    """The discipline shed this waiter; `by` names the discipline (the drop's stage)."""

    def __init__(self, by: str, message: str) -> None:
        super().__init__(message)
        self.by = by


@dataclass(frozen=True)
class Discipline:
    """How a queue is served. `target` and `interval` are seconds; every discipline knows when
    its queue stands (`interval`), whether or not it acts on it."""

    name: ClassVar[str]
    target: float = DEFAULT_TARGET_S
    interval: float = DEFAULT_INTERVAL_S

    def max_wait(self, standing: bool) -> float | None:
        """How long a query joining the queue now may wait; None: no limit."""
        return None

    def newest_first(self, standing: bool) -> bool:
        """Whether a slot freed now goes to the newest waiter rather than the oldest."""
        return False


class Fifo(Discipline):
    """Oldest first; nobody is shed."""

    name = "fifo"


class CoDel(Discipline):
    """Oldest first; a query may wait `target` if it joins a standing queue, else `interval`."""

    name = "codel"

    def max_wait(self, standing: bool) -> float | None:
        return self.target if standing else self.interval


class AdaptiveLifo(Discipline):
    """Oldest first until the queue stands; newest first while it stands."""

    name = "lifo"

    def newest_first(self, standing: bool) -> bool:
        return standing


KINDS: dict[str, type[Discipline]] = {d.name: d for d in (Fifo, CoDel, AdaptiveLifo)}
NAMES = tuple(KINDS)


def discipline(
    name: str, target: float = DEFAULT_TARGET_S, interval: float = DEFAULT_INTERVAL_S
) -> Discipline:
    """The discipline called `name` (one of `NAMES`); KeyError for any other name."""
    return KINDS[name](target=target, interval=interval)


@dataclass
class _Waiter:
    future: asyncio.Future[int]
    timer: Timer | None


class WaitQueue:
    """Waiters in arrival order, served by a discipline that can change at any time.

    A waiter is a future: `pop` hands it to the limiter (`herdlab.capacity`), which resolves it
    with a slot (the slots in use once it is taken); the discipline resolves it with `Shed` when
    its limit runs out. Single-threaded: touched only
    from the event loop's thread.
    """

    def __init__(self, discipline: Discipline, clock: Clock) -> None:
        self.discipline = discipline
        self._clock = clock
        self._waiters: OrderedDict[int, _Waiter] = OrderedDict()
        self._ids = itertools.count()
        # When the queue last went from empty to non-empty; None while it is empty.
        self._nonempty_since: float | None = None

    def __len__(self) -> int:
        return len(self._waiters)

    def standing(self) -> bool:
        """True when the queue has been non-empty, without a break, for at least `interval`."""
        since = self._nonempty_since
        return since is not None and self._clock.now() - since >= self.discipline.interval

    def push(self, future: asyncio.Future[int]) -> int:
        """Adds a waiter at the back; returns its id (for `remove`)."""
        now = self._clock.now()
        limit = self.discipline.max_wait(self.standing())
        if self._nonempty_since is None:
            self._nonempty_since = now
        waiter_id = next(self._ids)
        timer = None
        if limit is not None:
            by = self.discipline.name
            timer = self._clock.call_at(now + limit, lambda: self._shed(waiter_id, by, limit))
        self._waiters[waiter_id] = _Waiter(future, timer)
        return waiter_id

    def remove(self, waiter_id: int) -> bool:
        """Takes a waiter out (its caller left); False if it had already left the queue."""
        waiter = self._waiters.pop(waiter_id, None)
        if waiter is None:
            return False
        self._left(waiter)
        return True

    def pop(self) -> asyncio.Future[int] | None:
        """The waiter a freed slot goes to, taken out of the queue; None if nobody waits."""
        if not self._waiters:
            return None
        newest = self.discipline.newest_first(self.standing())
        _, waiter = self._waiters.popitem(last=newest)
        self._left(waiter)
        return waiter.future

    def _shed(self, waiter_id: int, by: str, limit: float) -> None:
        waiter = self._waiters.pop(waiter_id, None)
        if waiter is None:
            return
        self._left(waiter)
        if not waiter.future.done():
            waiter.future.set_exception(Shed(by, f"shed by {by} after waiting {limit * 1000:g}ms"))

    def _left(self, waiter: _Waiter) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()
        if not self._waiters:
            self._nonempty_since = None
