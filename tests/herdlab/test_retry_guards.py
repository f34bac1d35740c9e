"""Retry policies with guards: a refusal is an attempt not sent, the policy backs off and tries
again within its bounds, and every sent attempt's outcome reaches the guards. No real time: the
policy's clock and sleep are injected."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from herdlab.guards import GuardRejected, Outcome, parse_guard_set
from herdlab.retry import RetryExhausted, RetryPolicy


def _error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "x", None)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_an_open_breaker_refuses_without_sending_and_the_policy_gives_up_typed() -> None:
    clock = Clock()
    guards = parse_guard_set("breaker:failures=1,reset=10s", clock=clock)
    policy = RetryPolicy(name="fixed", base_s=1.0, cap_s=1.0, max_attempts=4, max_total_s=100)
    sent: list[float] = []

    async def attempt(timeout_s: float) -> str:
        sent.append(clock.now)
        raise _error(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(RetryExhausted) as exhausted:
        await policy.call(attempt, sleep=clock.sleep, clock=clock, guards=guards)
    # One attempt reached the server; the breaker opened on it and refused the other three.
    assert sent == [0.0]
    assert exhausted.value.attempts == 4
    assert isinstance(exhausted.value.last, GuardRejected)
    assert exhausted.value.last.guard == "breaker"
    assert clock.sleeps == [1.0, 1.0, 1.0]
    assert guards.rejected == 3


async def test_a_budget_never_blocks_a_first_attempt_and_refuses_retries_when_spent() -> None:
    clock = Clock()
    # gRFC A6: 2 tokens, a failure costs 1, no retry while tokens <= 1.
    guards = parse_guard_set("budget:max_tokens=2,token_ratio=0.1", clock=clock)
    policy = RetryPolicy(name="fixed", base_s=0.5, cap_s=0.5, max_attempts=3, max_total_s=100)
    calls = 0

    async def failing(timeout_s: float) -> str:
        nonlocal calls
        calls += 1
        raise _error(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(RetryExhausted):
        await policy.call(failing, sleep=clock.sleep, clock=clock, guards=guards)
    assert calls == 1  # the first failure left 1 token: every retry refused
    ok_calls = 0

    async def ok(timeout_s: float) -> str:
        nonlocal ok_calls
        ok_calls += 1
        return "v"

    # A first attempt goes through however empty the bucket is.
    assert await policy.call(ok, sleep=clock.sleep, clock=clock, guards=guards) == "v"
    assert ok_calls == 1


async def test_a_limit_wait_counts_against_the_total_budget_and_the_deadline_starts_at_send() -> (
    None
):
    clock = Clock()
    guards = parse_guard_set("limit:n=1", clock=clock)
    policy = RetryPolicy(name="none", max_total_s=10.0, attempt_timeout_s=2.0)
    timeouts: list[float] = []

    async def attempt(timeout_s: float) -> str:
        timeouts.append(timeout_s)
        return "v"

    assert await policy.call(attempt, clock=clock, guards=guards) == "v"
    assert timeouts == [2.0]
    state = guards.state()
    assert state["limit_in_flight"] == 0  # the permit was returned


async def test_errors_that_are_not_overload_do_not_open_the_breaker() -> None:
    clock = Clock()
    guards = parse_guard_set("breaker:failures=1,reset=10s", clock=clock)
    policy = RetryPolicy(name="none", max_total_s=10.0)

    async def invalid(timeout_s: float) -> str:
        raise _error(grpc.StatusCode.INVALID_ARGUMENT)

    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError):
            await policy.call(invalid, clock=clock, guards=guards)
    assert guards.state()["breaker_state"] == 0  # still closed


async def test_no_attempt_is_sent_once_a_limit_wait_took_the_budget() -> None:
    clock = Clock()
    guards = parse_guard_set("limit:n=1+breaker:failures=1", clock=clock)
    policy = RetryPolicy(name="none", max_total_s=1.0, attempt_timeout_s=1.0)
    holder = await guards.acquire(retry=False, timeout_s=1.0)
    sent: list[float] = []

    async def attempt(timeout_s: float) -> str:
        sent.append(timeout_s)
        return "v"

    async def waiter() -> str:
        return await policy.call(attempt, clock=clock, guards=guards)

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # the waiter is queued behind the holder
    clock.now = 1.0  # ... and its whole budget passes while it waits
    holder.done(Outcome.OK, 0.1)
    with pytest.raises(RetryExhausted) as exhausted:
        await task
    assert sent == []
    assert isinstance(exhausted.value.last, GuardRejected)
    assert exhausted.value.last.guard == "deadline"
    assert guards.state()["breaker_state"] == 0  # nothing was blamed on the server


async def test_a_deadline_cut_short_by_the_budget_does_not_count_as_overload() -> None:
    clock = Clock()
    guards = parse_guard_set("breaker:failures=1", clock=clock)
    # The attempt's own deadline (2 s) is longer than the whole budget (0.5 s): cut short.
    policy = RetryPolicy(name="none", max_total_s=0.5, attempt_timeout_s=2.0)

    async def attempt(timeout_s: float) -> str:
        raise _error(grpc.StatusCode.DEADLINE_EXCEEDED)

    with pytest.raises(RetryExhausted):
        await policy.call(attempt, clock=clock, guards=guards)
    assert guards.state()["breaker_state"] == 0


async def test_a_cancelled_caller_gives_its_permit_back() -> None:
    guards = parse_guard_set("limit:n=1")
    policy = RetryPolicy(name="none", max_total_s=10.0)
    entered = asyncio.Event()

    async def attempt(timeout_s: float) -> str:
        entered.set()
        await asyncio.Event().wait()  # never answers
        return "v"

    task = asyncio.create_task(policy.call(attempt, guards=guards))
    await entered.wait()
    assert guards.state()["limit_in_flight"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert guards.state()["limit_in_flight"] == 0
