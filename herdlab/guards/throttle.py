"""`throttle`: client-side adaptive throttling, from the Google SRE book ("Handling Overload").

    throttle:k=2,window=30s

The client counts, over a sliding window, its `requests` (every acquire, first attempt or
retry, including the ones it refuses itself, as the book says) and the backend's `accepts`
(calls that came back OK), and refuses a new call locally with probability

    p = max(0, (requests - k * accepts) / (requests + 1))

While the backend accepts everything p stays 0. When it accepts nothing, the refusals make the
client send about `accepts * k` calls instead of all of them; k = 2 (the book's) lets through
about twice what is accepted, k = 1.1 about 1.1 times. The book's window is 2 minutes
(`window=2m`); the default here is 30 s (Envoy admission_control's), because after a total
outage the requests counted during it keep p high until they leave the window.
"""

from __future__ import annotations

import random

from herdlab.guards.base import (
    CallbackPermit,
    Clock,
    Guard,
    Outcome,
    Permit,
    Range,
    check,
)
from herdlab.guards.registry import GuardArgs, register
from herdlab.guards.window import SlidingCount
from herdlab.units import format_duration, format_number

K = Range(1, 10)
WINDOW = Range(1, 600, duration=True)


class Throttle(Guard):
    """The SRE book's adaptive throttle; the window is kept in per-second buckets, so memory is
    bounded by the window's length in seconds. The probability is computed from the counts
    before the new request is added, then the request is counted, then `rng` decides.
    Single-threaded: touched only from the event loop's thread."""

    name = "throttle"

    def __init__(
        self, k: float = 2.0, window_s: float = 30.0, *, clock: Clock, rng: random.Random
    ) -> None:
        super().__init__()
        check(self.name, "k", k, K)
        check(self.name, "window", window_s, WINDOW)
        self.k = k
        self.window_s = window_s
        self._rng = rng
        self._requests = SlidingCount(window_s, clock)
        self._accepts = SlidingCount(window_s, clock)

    def spec_items(self) -> list[tuple[str, str | None]]:
        return [
            ("k", format_number(self.k)),
            ("window", format_duration(self.window_s, short=True)),
        ]

    def rejection_probability(self) -> float:
        requests = self._requests.total()
        return max(0.0, (requests - self.k * self._accepts.total()) / (requests + 1))

    async def acquire(self, *, retry: bool, timeout_s: float) -> Permit:
        p = self.rejection_probability()
        self._requests.add()
        if p > 0 and self._rng.random() < p:
            self._reject(f"throttled locally (rejection probability {p:.2f})")
        return CallbackPermit(self._on_done)

    def _on_done(self, outcome: Outcome, rtt_s: float) -> None:
        if outcome is Outcome.OK:
            self._accepts.add()

    def state(self) -> dict[str, float]:
        return {"rejection_probability": self.rejection_probability()}


def _build(args: GuardArgs) -> Guard:
    args.allow(("k", "window"))
    return Throttle(
        k=args.number("k", 2.0, K),
        window_s=args.duration("window", 30.0, WINDOW),
        clock=args.clock,
        rng=args.rng,
    )


register("throttle", _build)
