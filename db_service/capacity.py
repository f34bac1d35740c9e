"""The DB's capacity: a concurrency limit in front of a bounded FIFO wait queue.

A query takes a slot if one is free and nobody is waiting; otherwise it waits in the queue if
the queue has room; otherwise it is rejected at once (`Rejected`, which the server turns into
RESOURCE_EXHAUSTED). A waiter whose caller goes away (its task is cancelled) leaves the queue
without taking a slot. Limits can change at runtime; a smaller limit takes effect as slots free.

Single-threaded by design: all state is touched only from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict


class Rejected(Exception):
    """The wait queue was full."""


class Capacity:
    def __init__(self, concurrency: int, queue: int) -> None:
        self.concurrency = concurrency
        self.queue = queue
        self.in_flight = 0
        # Waiting queries in arrival order; a slot is handed over by resolving the future.
        self._waiters: OrderedDict[int, asyncio.Future[None]] = OrderedDict()
        self._ids = itertools.count()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def resize(self, concurrency: int, queue: int) -> None:
        self.concurrency = concurrency
        self.queue = queue
        self._hand_over()

    async def acquire(self) -> None:
        """Takes a slot, waiting in the queue if needed. Raises `Rejected` if the queue is full."""
        if self.in_flight < self.concurrency and not self._waiters:
            self.in_flight += 1
            return
        if len(self._waiters) >= self.queue:
            raise Rejected(f"queue full ({self.queue} waiting, {self.in_flight} in flight)")
        waiter_id = next(self._ids)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[waiter_id] = future
        try:
            await future
        except asyncio.CancelledError:
            if (
                self._waiters.pop(waiter_id, None) is None
                and future.done()
                and not (future.cancelled())
            ):
                # The slot was handed to us in the same tick as the cancel: give it back.
                self.release()
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        while self._waiters and self.in_flight < self.concurrency:
            _, future = self._waiters.popitem(last=False)
            if not future.done():
                self.in_flight += 1
                future.set_result(None)
