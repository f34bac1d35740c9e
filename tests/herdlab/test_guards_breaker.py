"""The `breaker` guard's transitions on an injected clock: closed -> open -> half-open ->
closed, and half-open -> open with the reset timer restarting."""

from __future__ import annotations

import pytest

from herdlab.guards import GuardRejected, Outcome, Permit
from herdlab.guards.breaker import Breaker, BreakerState


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker(failures: int = 3, reset_s: float = 1.0, probes: int = 1) -> tuple[Breaker, FakeClock]:
    clock = FakeClock()
    return Breaker(failures=failures, reset_s=reset_s, probes=probes, clock=clock), clock


def state(guard: Breaker) -> float:
    return guard.state()["state"]


async def call(guard: Breaker, outcome: Outcome) -> None:
    (await guard.acquire(retry=False, timeout_s=1.0)).done(outcome, 0.1)


async def refused(guard: Breaker) -> str:
    with pytest.raises(GuardRejected) as caught:
        await guard.acquire(retry=False, timeout_s=1.0)
    return str(caught.value)


async def trip(guard: Breaker) -> None:
    for _ in range(guard.failures):
        await call(guard, Outcome.OVERLOAD)


async def test_consecutive_overloads_open_it_and_an_ok_resets_the_count() -> None:
    guard, _ = breaker(failures=3)
    await call(guard, Outcome.OVERLOAD)
    await call(guard, Outcome.OVERLOAD)
    await call(guard, Outcome.OK)
    await call(guard, Outcome.OVERLOAD)
    await call(guard, Outcome.OVERLOAD)
    assert state(guard) == BreakerState.CLOSED
    await call(guard, Outcome.OVERLOAD)
    assert state(guard) == 2, "exported as 2"


async def test_ignore_neither_counts_nor_resets() -> None:
    guard, _ = breaker(failures=3)
    await call(guard, Outcome.OVERLOAD)
    await call(guard, Outcome.OVERLOAD)
    await call(guard, Outcome.IGNORE)
    await call(guard, Outcome.OVERLOAD)
    assert state(guard) == BreakerState.OPEN


async def test_closed_open_half_open_closed() -> None:
    guard, clock = breaker(failures=3, reset_s=1.0)
    await trip(guard)
    assert await refused(guard) == "breaker: open, half-open in 1s"
    clock.now = 0.999
    assert await refused(guard) == "breaker: open, half-open in 0.001s"
    clock.now = 1.0
    assert state(guard) == 1, "exported as 1"
    probe = await guard.acquire(retry=False, timeout_s=1.0)
    assert await refused(guard) == "breaker: half-open, 1 probe(s) in flight"
    probe.done(Outcome.OK, 0.1)
    assert state(guard) == 0, "exported as 0"
    await call(guard, Outcome.OK)
    assert guard.rejected == 3


async def test_a_failed_probe_reopens_and_restarts_the_reset_timer() -> None:
    guard, clock = breaker(failures=3, reset_s=1.0)
    await trip(guard)
    clock.now = 1.2
    await call(guard, Outcome.OVERLOAD)
    assert state(guard) == BreakerState.OPEN
    clock.now = 2.1
    assert state(guard) == BreakerState.OPEN, "the timer restarted at 1.2"
    clock.now = 2.2
    assert state(guard) == BreakerState.HALF_OPEN


async def test_an_ignored_probe_frees_its_slot_and_stays_half_open() -> None:
    guard, clock = breaker(failures=3)
    await trip(guard)
    clock.now = 1.0
    await call(guard, Outcome.IGNORE)
    assert state(guard) == BreakerState.HALF_OPEN
    await call(guard, Outcome.OK)
    assert state(guard) == BreakerState.CLOSED


async def test_half_open_admits_probes_at_a_time() -> None:
    guard, clock = breaker(failures=3, probes=2)
    await trip(guard)
    clock.now = 1.0
    first = await guard.acquire(retry=False, timeout_s=1.0)
    await guard.acquire(retry=True, timeout_s=1.0)
    assert await refused(guard) == "breaker: half-open, 2 probe(s) in flight"
    first.done(Outcome.IGNORE, 0.0)
    await guard.acquire(retry=False, timeout_s=1.0)


async def test_outcomes_from_an_earlier_state_are_ignored() -> None:
    """Bug: stragglers admitted while closed restart the timer or close a half-open breaker."""
    guard, clock = breaker(failures=3)
    stragglers: list[Permit] = [await guard.acquire(retry=False, timeout_s=1.0) for _ in range(2)]
    await trip(guard)
    clock.now = 0.9
    stragglers[0].done(Outcome.OVERLOAD, 0.1)
    clock.now = 1.0
    assert state(guard) == BreakerState.HALF_OPEN, "the straggler's failure did not restart it"
    probe = await guard.acquire(retry=False, timeout_s=1.0)
    stragglers[1].done(Outcome.OK, 0.1)
    assert state(guard) == BreakerState.HALF_OPEN, "only a probe's OK closes it"
    probe.done(Outcome.OK, 0.1)
    assert state(guard) == BreakerState.CLOSED
