"""The `budget` guard's arithmetic, step by step on an injected clock: gRFC A6's token bucket and
Finagle's RetryBudget. No real time."""

from __future__ import annotations

import pytest

from herdlab.guards import GuardRejected, Outcome, Permit, parse_guard_set
from herdlab.guards.budget import A6Budget, FinagleBudget
from herdlab.guards.window import SlidingCount


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def admitted(guard: A6Budget | FinagleBudget, *, retry: bool) -> bool:
    try:
        await guard.acquire(retry=retry, timeout_s=1.0)
    except GuardRejected:
        return False
    return True


async def report(guard: A6Budget, outcome: Outcome, times: int = 1) -> None:
    for _ in range(times):
        permit: Permit = await guard.acquire(retry=False, timeout_s=1.0)
        permit.done(outcome, 0.1)


def tokens(guard: A6Budget | FinagleBudget) -> float:
    return guard.state()["tokens"]


async def test_a6_tokens_step_by_step() -> None:
    budget = A6Budget(max_tokens=10, token_ratio=0.1)
    assert tokens(budget) == 10.0
    await report(budget, Outcome.OVERLOAD, times=4)
    assert tokens(budget) == 6.0 and await admitted(budget, retry=True)
    # The retry above was admitted but never reported: admissions alone cost nothing.
    await report(budget, Outcome.OVERLOAD)
    assert tokens(budget) == 5.0
    assert not await admitted(budget, retry=True), "refused while tokens <= max_tokens / 2"
    await report(budget, Outcome.OK)
    assert tokens(budget) == 5.1 and await admitted(budget, retry=True)
    await report(budget, Outcome.IGNORE, times=3)
    assert tokens(budget) == 5.1, "IGNORE outcomes neither cost nor earn"
    await report(budget, Outcome.OK, times=10)
    assert tokens(budget) == 6.1, "ten successes at 0.1 are exactly one token (milli-tokens)"
    assert budget.rejected == 1


async def test_a6_first_attempts_are_never_refused_and_tokens_stay_in_bounds() -> None:
    budget = A6Budget(max_tokens=4, token_ratio=0.5)
    await report(budget, Outcome.OVERLOAD, times=20)
    assert tokens(budget) == 0.0
    assert await admitted(budget, retry=False)
    assert not await admitted(budget, retry=True)
    await report(budget, Outcome.OK, times=20)
    assert tokens(budget) == 4.0


async def test_a6_retry_outcomes_count_like_first_attempts() -> None:
    budget = A6Budget(max_tokens=10, token_ratio=0.1)
    permit = await budget.acquire(retry=True, timeout_s=1.0)
    permit.done(Outcome.OVERLOAD, 0.1)
    assert tokens(budget) == 9.0


async def test_a6_refusal_names_the_guard_and_the_tokens() -> None:
    budget = A6Budget(max_tokens=2, token_ratio=0.1)
    await report(budget, Outcome.OVERLOAD)
    with pytest.raises(GuardRejected) as refused:
        await budget.acquire(retry=True, timeout_s=1.0)
    assert refused.value.guard == "budget"
    assert str(refused.value) == "budget: retry budget spent (1 tokens, retries need more than 1)"


async def test_finagle_balance_step_by_step() -> None:
    clock = FakeClock()
    # Reserve = min_per_s * ttl = 0.1 * 10 = 1 token.
    budget = FinagleBudget(ratio=0.5, min_per_s=0.1, ttl_s=10.0, clock=clock)
    assert tokens(budget) == 1.0
    assert await admitted(budget, retry=True)
    assert tokens(budget) == 0.0
    assert not await admitted(budget, retry=True)
    for _ in range(4):
        assert await admitted(budget, retry=False), "first attempts are never refused"
    assert tokens(budget) == 2.0, "each first attempt deposits ratio = 0.5"
    assert await admitted(budget, retry=True) and await admitted(budget, retry=True)
    assert not await admitted(budget, retry=True)
    assert budget.rejected == 2


async def test_finagle_deposits_and_withdrawals_expire_after_ttl() -> None:
    clock = FakeClock()
    budget = FinagleBudget(ratio=0.5, min_per_s=0.1, ttl_s=10.0, clock=clock)
    for _ in range(4):
        await budget.acquire(retry=False, timeout_s=1.0)
    await budget.acquire(retry=True, timeout_s=1.0)
    assert tokens(budget) == 2.0
    clock.now = 9.5
    assert tokens(budget) == 2.0, "still within the ttl (per-second buckets)"
    clock.now = 10.0
    assert tokens(budget) == 1.0, "both the deposits and the withdrawal expired: the reserve"


async def test_finagle_defaults_allow_the_reserve_per_ttl() -> None:
    clock = FakeClock()
    budget = parse_guard_set("budget:ttl=10s", clock=clock).guards[0]
    assert isinstance(budget, FinagleBudget)
    assert budget.spec == "budget:ratio=0.2,min_per_s=10,ttl=10s"
    allowed = [await admitted(budget, retry=True) for _ in range(101)]
    assert allowed.count(True) == 100, "min_per_s 10 x ttl 10 s = 100 retries with no traffic"


def test_sliding_count_keeps_one_bucket_per_second_of_window() -> None:
    """Bug: a window kept per event, or never expired, grows with the call rate."""
    clock = FakeClock()
    count = SlidingCount(3.0, clock)
    for step in range(1000):
        clock.now = step * 0.01
        count.add()
    assert count.total() == 300, "seconds 7, 8 and 9 are in the window, 100 each"
    assert len(count._buckets) == 3
    clock.now = 12.0
    assert count.total() == 0 and len(count._buckets) == 0
