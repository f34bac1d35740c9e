"""`limit`: a limit on calls in flight, with a bounded FIFO wait (Netflix concurrency-limits'
limiter, in front of one of `herdlab.guards.limit_algorithms`).

    limit                                     static, 20 slots
    limit:n=20                                static, n slots
    limit:aimd[,initial=20,min=1,max=200,backoff=0.9]
    limit:vegas[,initial=20,max=1000]
    ...,queue=100000                          any of them: at most this many waiters

The first bare word after `:` names the algorithm (`static` may be written, and is implied when
there is none); the `k=v` parameters follow it. A call takes a slot if fewer than `limit` are in
flight and nobody waits; otherwise it waits, first come first served, at most `timeout_s` (the
caller's remaining deadline) and only if fewer than `queue` already wait; otherwise it is refused
at once. A waiter whose task is cancelled leaves the queue without keeping a slot, even when the
slot was handed to it in the same tick as the cancel. A smaller limit takes effect as calls end.

Slots and waiting line are not kept here: they are the limiter shared with the servers' capacity
(`herdlab.capacity.Limiter`, its line in `herdlab.queueing`), served first come first served
(its `fifo` discipline). The spec has no discipline parameter, so every `limit` reads back from
its spec.

This is the cure that bounds load directly: however many callers retry, at most `limit` calls
reach the backend, and the rest wait here with their own deadline instead of in its queue.
"""

from __future__ import annotations

import math

from herdlab.capacity import Limiter, Rejected
from herdlab.guards.base import (
    CallbackPermit,
    Guard,
    Outcome,
    Permit,
    Range,
    check,
)
from herdlab.guards.limit_algorithms import (
    BACKOFF,
    LIMIT,
    AIMDLimit,
    LimitAlgorithm,
    StaticLimit,
    VegasLimit,
)
from herdlab.guards.registry import GuardArgs, register
from herdlab.units import format_number

QUEUE = Range(0, 1_000_000)

ALGORITHM_PARAMS = {
    "static": ("n",),
    "aimd": ("initial", "min", "max", "backoff"),
    "vegas": ("initial", "max"),
}


class ConcurrencyLimit(Guard):
    """Enforces `algorithm.limit` on calls in flight and feeds the algorithm each admitted
    call's outcome (OK and OVERLOAD; IGNORE is not a sample). Slots and waiting line are the
    shared limiter's (`herdlab.capacity.Limiter`, FIFO). Single-threaded by design: all state is
    touched only from the event loop's thread."""

    name = "limit"

    def __init__(self, algorithm: LimitAlgorithm, queue: int = 100_000) -> None:
        super().__init__()
        check(self.name, "queue", queue, QUEUE)
        self._slots = Limiter(algorithm, queue)

    @property
    def algorithm(self) -> LimitAlgorithm:
        return self._slots.algorithm

    @property
    def queue(self) -> int:
        return self._slots.queue

    @property
    def in_flight(self) -> int:
        return self._slots.in_flight

    @property
    def waiting(self) -> int:
        return self._slots.queued

    def spec_items(self) -> list[tuple[str, str | None]]:
        return [*self.algorithm.spec_items(), ("queue", format_number(self.queue))]

    async def acquire(self, *, retry: bool, timeout_s: float) -> Permit:
        """Takes a slot, waiting at most `timeout_s` (finite: a wait is never unbounded)."""
        if not math.isfinite(timeout_s):
            raise ValueError(f"guard 'limit': timeout_s must be finite, got {timeout_s}")
        limit = self.algorithm.limit
        try:
            slot = await self._slots.take(timeout_s)
        except Rejected:
            self._reject(f"queue full ({self.waiting} waiting for {limit} slots)")
        except TimeoutError:
            if timeout_s > 0:
                self._reject(f"no slot free within {timeout_s:.3g}s ({limit} slots)")
            self._reject(f"no time left to wait for one of {limit} slots")
        return self._permit(slot.in_flight)

    def _permit(self, sampled_in_flight: int) -> Permit:
        def done(outcome: Outcome, rtt_s: float) -> None:
            if outcome is not Outcome.IGNORE:
                self._slots.sample(rtt_s, sampled_in_flight, outcome is Outcome.OVERLOAD)
            self._slots.release()

        return CallbackPermit(done)

    def state(self) -> dict[str, float]:
        return {
            "limit": float(self.algorithm.limit),
            "in_flight": float(self.in_flight),
            "waiting": float(self.waiting),
        }


def _algorithm(args: GuardArgs) -> LimitAlgorithm:
    name = args.words[0] if args.words else "static"
    allowed = ALGORITHM_PARAMS.get(name)
    if allowed is None:
        raise ValueError(
            f"guard 'limit': unknown algorithm {name!r}; choose from {', '.join(ALGORITHM_PARAMS)}"
        )
    args.allow((*allowed, "queue"), words=1, context=f" for algorithm {name}")
    if name == "aimd":
        return AIMDLimit(
            initial=args.integer("initial", 20, LIMIT),
            min_limit=args.integer("min", 1, LIMIT),
            max_limit=args.integer("max", 200, LIMIT),
            backoff=args.number("backoff", 0.9, BACKOFF),
        )
    if name == "vegas":
        return VegasLimit(
            initial=args.integer("initial", 20, LIMIT),
            max_limit=args.integer("max", 1000, LIMIT),
            rng=args.rng,
        )
    return StaticLimit(n=args.integer("n", 20, LIMIT))


def _build(args: GuardArgs) -> Guard:
    algorithm = _algorithm(args)
    return ConcurrencyLimit(algorithm, queue=args.integer("queue", 100_000, QUEUE))


register("limit", _build, "limit[:aimd|vegas|n=N]")
