"""The `throttle` guard (Google SRE book, client-side adaptive throttling): its rejection
probability at chosen request/accept counts and after the window slides, on an injected clock
and a random source whose draws the test chooses."""

from __future__ import annotations

import random

import pytest

from herdlab.guards import GuardRejected, Outcome, Permit
from herdlab.guards.throttle import Throttle


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FixedRandom(random.Random):
    """Every draw is `value`: 0.0 refuses whenever p > 0, 0.999 admits unless p > 0.999."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def throttle(
    rng_value: float, k: float = 2.0, window_s: float = 30.0
) -> tuple[Throttle, FakeClock]:
    clock = FakeClock()
    return Throttle(k=k, window_s=window_s, clock=clock, rng=FixedRandom(rng_value)), clock


def p(guard: Throttle) -> float:
    return guard.state()["rejection_probability"]


async def requests(guard: Throttle, n: int, accepted: int = 0, retry: bool = False) -> None:
    """`n` admitted calls, the first `accepted` of them reported OK, the rest OVERLOAD."""
    permits: list[Permit] = [await guard.acquire(retry=retry, timeout_s=1.0) for _ in range(n)]
    for i, permit in enumerate(permits):
        permit.done(Outcome.OK if i < accepted else Outcome.OVERLOAD, 0.1)


async def test_probability_is_zero_while_accepts_keep_up() -> None:
    guard, _ = throttle(0.999)
    await requests(guard, 10, accepted=5)
    assert p(guard) == 0.0, "10 - 2 * 5 = 0"


@pytest.mark.parametrize(
    ("n", "accepted", "expected"),
    [(10, 0, 10 / 11), (10, 4, 2 / 11), (20, 3, 14 / 21), (9, 4, 1 / 10)],
)
async def test_probability_at_request_and_accept_counts(
    n: int, accepted: int, expected: float
) -> None:
    guard, _ = throttle(0.999)
    await requests(guard, n, accepted)
    assert p(guard) == pytest.approx(expected)


async def test_k_sets_how_far_requests_may_exceed_accepts() -> None:
    guard, _ = throttle(0.999, k=1.5)
    await requests(guard, 10, accepted=4)
    assert p(guard) == pytest.approx((10 - 1.5 * 4) / 11)


async def test_refused_requests_count_as_requests() -> None:
    guard, _ = throttle(0.0)
    await requests(guard, 1, accepted=0)
    for _ in range(5):
        with pytest.raises(GuardRejected, match=r"^throttle: throttled locally"):
            await guard.acquire(retry=False, timeout_s=1.0)
    assert guard.rejected == 5
    assert p(guard) == pytest.approx(6 / 7)


async def test_retries_and_first_attempts_are_both_requests() -> None:
    guard, _ = throttle(0.999)
    await requests(guard, 3, retry=True)
    await requests(guard, 3, retry=False)
    assert p(guard) == pytest.approx(6 / 7)


async def test_only_ok_outcomes_are_accepts() -> None:
    guard, _ = throttle(0.999)
    permits = [await guard.acquire(retry=False, timeout_s=1.0) for _ in range(4)]
    permits[0].done(Outcome.IGNORE, 0.0)
    permits[1].done(Outcome.OVERLOAD, 0.1)
    permits[2].done(Outcome.OK, 0.1)
    permits[3].done(Outcome.OVERLOAD, 0.1)
    assert p(guard) == pytest.approx((4 - 2 * 1) / 5)


async def test_the_window_slides_per_second() -> None:
    guard, clock = throttle(0.999, window_s=30.0)
    await requests(guard, 10)
    clock.now = 20.0
    await requests(guard, 5, accepted=1)
    assert p(guard) == pytest.approx((15 - 2) / 16)
    clock.now = 29.5
    assert p(guard) == pytest.approx((15 - 2) / 16), "second 0 is still in a 30 s window"
    clock.now = 30.0
    assert p(guard) == pytest.approx((5 - 2) / 6), "the 10 failures of second 0 left"
    clock.now = 50.0
    assert p(guard) == 0.0


async def test_a_seeded_rng_refuses_about_p_of_the_calls() -> None:
    guard = Throttle(k=2.0, window_s=30.0, clock=FakeClock(), rng=random.Random(7))
    await requests(guard, 1)
    refused = 0
    for _ in range(200):
        try:
            (await guard.acquire(retry=False, timeout_s=1.0)).done(Outcome.IGNORE, 0.0)
        except GuardRejected:
            refused += 1
    # With no accepts p climbs from 1/2 to 200/201; the p's sum to about 195 refusals, and
    # seed 7 draws 197 of them.
    assert refused == guard.rejected == 197
