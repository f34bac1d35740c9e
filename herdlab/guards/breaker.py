"""`breaker`: a circuit breaker (Nygard, "Release It!").

    breaker:failures=5,reset=1s,probes=1

    closed     admits every call; `failures` consecutive OVERLOAD outcomes open it
               (an OK resets the count; IGNORE leaves it)
    open       refuses every call until `reset` has passed since it opened
    half-open  admits up to `probes` calls at a time; a probe's OK closes the breaker, a
               probe's OVERLOAD opens it again (and `reset` starts over); IGNORE frees the slot

Only outcomes of calls admitted in the current state count: a call admitted while closed that
ends after the breaker opened does not restart the reset timer or close a half-open breaker.

Written here rather than taken from PyPI: pybreaker and aiobreaker read the wall clock
(`datetime.now`) with no way to inject one, so tests would need real time; purgatory reads
`time.time()` too and keeps breakers in a named, factory-owned store behind a unit of work and a
message bus; none of them caps the calls a half-open breaker lets through (they admit every call
until the first outcome), and their resets default to 30-60 s, which would add half a minute to
a 10 s outage in this lab (hence `reset=1s` here). Each wraps a call; guards here split the
decision (`acquire`) from the report (`Permit.done`).
"""

from __future__ import annotations

import enum

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
from herdlab.units import format_duration, format_number

FAILURES = Range(1, 1000)
RESET = Range(0.001, 600, duration=True)
PROBES = Range(1, 1000)


class BreakerState(enum.IntEnum):
    """Numbered as `state()` exports them."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class Breaker(Guard):
    """Closed -> open -> half-open -> closed (or open again), on an injected clock.
    Single-threaded: touched only from the event loop's thread."""

    name = "breaker"

    def __init__(
        self, failures: int = 5, reset_s: float = 1.0, probes: int = 1, *, clock: Clock
    ) -> None:
        super().__init__()
        check(self.name, "failures", failures, FAILURES)
        check(self.name, "reset", reset_s, RESET)
        check(self.name, "probes", probes, PROBES)
        self.failures = failures
        self.reset_s = reset_s
        self.probes = probes
        self._clock = clock
        self._state = BreakerState.CLOSED
        # Bumped on every transition: a permit from an earlier state reports to no one.
        self._epoch = 0
        self._consecutive = 0
        self._opened_at = 0.0
        self._probes_in_flight = 0

    def spec_items(self) -> list[tuple[str, str | None]]:
        return [
            ("failures", format_number(self.failures)),
            ("reset", format_duration(self.reset_s, short=True)),
            ("probes", format_number(self.probes)),
        ]

    @property
    def current(self) -> BreakerState:
        """The state now (an open breaker whose reset has passed is half-open)."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_s:
            self._enter(BreakerState.HALF_OPEN)
        return self._state

    async def acquire(self, *, retry: bool, timeout_s: float) -> Permit:
        state = self.current
        if state is BreakerState.OPEN:
            left = self.reset_s - (self._clock() - self._opened_at)
            self._reject(f"open, half-open in {left:.3g}s")
        if state is BreakerState.HALF_OPEN:
            if self._probes_in_flight >= self.probes:
                self._reject(f"half-open, {self._probes_in_flight} probe(s) in flight")
            self._probes_in_flight += 1
        epoch = self._epoch
        return CallbackPermit(lambda outcome, rtt_s: self._on_done(epoch, outcome))

    def _on_done(self, epoch: int, outcome: Outcome) -> None:
        if epoch != self._epoch:
            return
        if self._state is BreakerState.CLOSED:
            if outcome is Outcome.OK:
                self._consecutive = 0
            elif outcome is Outcome.OVERLOAD:
                self._consecutive += 1
                if self._consecutive >= self.failures:
                    self._open()
            return
        self._probes_in_flight -= 1
        if outcome is Outcome.OK:
            self._enter(BreakerState.CLOSED)
        elif outcome is Outcome.OVERLOAD:
            self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._enter(BreakerState.OPEN)

    def _enter(self, state: BreakerState) -> None:
        self._state = state
        self._epoch += 1
        self._consecutive = 0
        self._probes_in_flight = 0

    def state(self) -> dict[str, float]:
        return {"state": float(self.current)}


def _build(args: GuardArgs) -> Guard:
    args.allow(("failures", "reset", "probes"))
    return Breaker(
        failures=args.integer("failures", 5, FAILURES),
        reset_s=args.duration("reset", 1.0, RESET),
        probes=args.integer("probes", 1, PROBES),
        clock=args.clock,
    )


register("breaker", _build)
