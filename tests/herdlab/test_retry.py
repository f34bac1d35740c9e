"""Retry policies: the delays each one draws (seeded), and how `call()` bounds, filters and times
its attempts. No real time passes: `call()` gets an injected sleep that advances a fake clock,
and the attempts advance the same clock, so every schedule is recorded exactly."""

from __future__ import annotations

import asyncio
import json
import math
import statistics
from dataclasses import dataclass, field

import grpc
import pytest

from herdlab.retry import (
    JITTERED,
    POLICY_NAMES,
    RETRYABLE_CODES,
    RetryExhausted,
    RetryPolicy,
    parse_policy_names,
)

BASE, CAP = 0.1, 5.0


def expo(n: int, base: float = BASE, cap: float = CAP) -> float:
    return min(cap, base * 2.0 ** (n - 1))


def rpc_error(code: grpc.StatusCode, details: str = "boom") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)


@dataclass
class FakeTime:
    """A clock that moves only when the policy sleeps or an attempt says it took time."""

    now: float = 1_000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(float(seconds))
        self.now += seconds


@dataclass
class Attempts:
    """An attempt function that fails with `errors` in turn (then succeeds), each taking `cost_s`
    of fake time, and records the timeout it was given."""

    time: FakeTime
    errors: list[BaseException]
    cost_s: float = 0.0
    timeouts: list[float] = field(default_factory=list)
    raised: list[BaseException] = field(default_factory=list)

    async def __call__(self, timeout_s: float) -> str:
        self.timeouts.append(timeout_s)
        self.time.now += self.cost_s
        index = len(self.timeouts) - 1
        if index < len(self.errors):
            self.raised.append(self.errors[index])
            raise self.errors[index]
        return f"ok after {len(self.timeouts)}"

    @property
    def count(self) -> int:
        return len(self.timeouts)


def always(code: grpc.StatusCode, n: int = 200) -> list[BaseException]:
    """`n` distinct errors with the same code (distinct objects, so 'the last one' is checkable)."""
    return [rpc_error(code, f"failure {i + 1}") for i in range(n)]


def policy(name: str, **kw: object) -> RetryPolicy:
    args: dict[str, object] = {"base_s": BASE, "cap_s": CAP, "seed": 42} | kw
    return RetryPolicy(name, **args)  # type: ignore[arg-type]


# -- the delays ------------------------------------------------------------------------------


def test_fixed_and_exponential_have_exact_delays() -> None:
    assert policy("fixed").schedule(5) == [BASE] * 5
    assert policy("exponential").schedule(8) == [expo(n) for n in range(1, 9)]
    assert policy("exponential").schedule(8)[-2:] == [CAP, CAP]


def test_exponential_does_not_overflow_for_huge_retry_numbers() -> None:
    """Bug: base * 2**n overflows to inf (or raises OverflowError) long before it is capped."""
    delays = policy("exponential").schedule(2_000)
    assert delays[-1] == CAP and all(math.isfinite(d) for d in delays)
    additive = policy("additive").schedule(2_000)
    assert all(CAP <= d <= 2 * CAP for d in additive[-100:])


@pytest.mark.parametrize("seed", range(200))
def test_jittered_delays_stay_within_their_bounds(seed: int) -> None:
    n_retries = 12  # reaches the cap (0.1 * 2**6 > 5)
    full = policy("full", seed=seed).schedule(n_retries)
    equal = policy("equal", seed=seed).schedule(n_retries)
    additive = policy("additive", seed=seed).schedule(n_retries)
    decorrelated = policy("decorrelated", seed=seed).schedule(n_retries)
    for n in range(1, n_retries + 1):
        e = expo(n)
        assert 0.0 <= full[n - 1] <= e
        assert e / 2 <= equal[n - 1] <= e
        assert e <= additive[n - 1] <= 2 * e
    previous = BASE
    for d in decorrelated:
        assert BASE <= d <= min(CAP, 3 * previous)
        previous = d


DRAWS = 20_000


def draws(name: str, retry_number: int, *, seed: int = 7) -> list[float]:
    """`DRAWS` delays before retry `retry_number`, each from a fresh schedule of one policy."""
    p = policy(name, seed=seed)
    return [p.schedule(retry_number)[-1] for _ in range(DRAWS)]


@pytest.mark.parametrize(
    ("name", "retry_number", "mean_over_expo"),
    [
        ("full", 1, 0.5),
        ("full", 4, 0.5),
        ("equal", 1, 0.75),
        ("equal", 4, 0.75),
        ("additive", 1, 1.5),
        ("additive", 4, 1.5),
    ],
)
def test_jittered_delays_have_the_expected_mean(
    name: str, retry_number: int, mean_over_expo: float
) -> None:
    """The mean of each jitter is a fixed fraction of expo(n); the tolerance (2 % of expo(n),
    about 10 standard errors) is far tighter than the gap to any wrong formula (e.g. full jitter
    over expo(n)/2 has mean 0.25, equal jitter without the half has 0.5)."""
    e = expo(retry_number)
    sample = draws(name, retry_number)
    assert statistics.fmean(sample) == pytest.approx(mean_over_expo * e, abs=0.02 * e)
    # Spread uniformly, not a constant: a uniform over a width w has standard deviation w/sqrt(12).
    width = {"full": e, "equal": e / 2, "additive": e}[name]
    assert statistics.pstdev(sample) == pytest.approx(width / math.sqrt(12), rel=0.05)


def test_decorrelated_delays_grow_from_the_previous_one() -> None:
    """E[d1] = E[U(b, 3b)] = 2b; E[d2] = (b + 3 E[d1]) / 2 = 3.5b. A decorrelated jitter that
    forgot its previous sleep (U(b, 3b) every time) would have E[d2] = 2b."""
    sample = [policy("decorrelated", seed=s).schedule(2) for s in range(DRAWS)]
    assert statistics.fmean(d[0] for d in sample) == pytest.approx(2 * BASE, rel=0.02)
    assert statistics.fmean(d[1] for d in sample) == pytest.approx(3.5 * BASE, rel=0.03)


def test_decorrelated_is_capped() -> None:
    delays = policy("decorrelated", cap_s=0.5).schedule(200)
    assert max(delays) <= 0.5
    assert delays.count(0.5) > 50  # at the cap most of the time once there


@pytest.mark.parametrize("name", sorted(JITTERED))
def test_a_seed_reproduces_the_schedule(name: str) -> None:
    assert policy(name, seed=1).schedule(20) == policy(name, seed=1).schedule(20)
    assert policy(name, seed=1).schedule(20) != policy(name, seed=2).schedule(20)
    assert policy(name, seed=None).with_seed(1).schedule(20) == policy(name, seed=1).schedule(20)


@pytest.mark.parametrize("name", sorted(JITTERED))
def test_unseeded_policies_differ(name: str) -> None:
    """Bug: the jitter's random source is seeded by a constant, so separate processes (each
    cache replica, each herd client) stay in step after all."""
    assert policy(name, seed=None).schedule(20) != policy(name, seed=None).schedule(20)


async def run_callers(p: RetryPolicy, callers: int, attempts: int) -> list[list[float]]:
    """The sleeps each of `callers` concurrent callers of one policy takes before giving up."""
    times = [FakeTime() for _ in range(callers)]

    async def one(t: FakeTime) -> None:
        with pytest.raises(RetryExhausted):
            await p.call(
                Attempts(t, always(grpc.StatusCode.UNAVAILABLE)), sleep=t.sleep, clock=t.clock
            )

    await asyncio.gather(*(one(t) for t in times))
    assert all(len(t.sleeps) == attempts - 1 for t in times)
    return [t.sleeps for t in times]


async def test_exponential_keeps_every_caller_in_step() -> None:
    schedules = await run_callers(policy("exponential", max_attempts=7), 20, 7)
    assert all(s == schedules[0] for s in schedules)
    assert schedules[0] == [expo(n) for n in range(1, 7)]


@pytest.mark.parametrize("name", sorted(JITTERED))
async def test_jittered_policies_spread_callers_apart(name: str) -> None:
    schedules = await run_callers(policy(name, max_attempts=7), 20, 7)
    assert len({tuple(s) for s in schedules}) == 20
    firsts = [s[0] for s in schedules]
    assert len(set(firsts)) == 20


@pytest.mark.parametrize("name", POLICY_NAMES)
async def test_call_sleeps_exactly_the_schedule(name: str) -> None:
    """Bug: `call()` and `schedule()` disagree (e.g. tenacity resets the state the decorrelated
    jitter reads its previous sleep from), so recorded schedules say nothing about real runs."""
    t = FakeTime()
    p = policy(name, max_attempts=10, max_total_s=1_000, seed=99)
    with pytest.raises(RetryExhausted):
        await p.call(Attempts(t, always(grpc.StatusCode.UNAVAILABLE)), sleep=t.sleep, clock=t.clock)
    expected = policy(name, seed=99).schedule(p.attempts - 1)
    assert t.sleeps == pytest.approx(expected)


# -- bounds: attempts AND total time ------------------------------------------------------------


async def test_none_makes_exactly_one_attempt() -> None:
    t = FakeTime()
    attempt = Attempts(t, always(grpc.StatusCode.UNAVAILABLE))
    with pytest.raises(RetryExhausted) as info:
        await policy("none", max_attempts=6).call(attempt, sleep=t.sleep, clock=t.clock)
    assert attempt.count == 1 and t.sleeps == []
    assert info.value.attempts == 1


async def test_stops_after_max_attempts_with_the_last_error() -> None:
    t = FakeTime()
    errors = always(grpc.StatusCode.RESOURCE_EXHAUSTED)
    attempt = Attempts(t, errors)
    with pytest.raises(RetryExhausted) as info:
        await policy("fixed", max_attempts=4, max_total_s=1_000).call(
            attempt, sleep=t.sleep, clock=t.clock
        )
    assert attempt.count == 4
    assert t.sleeps == [BASE] * 3
    assert info.value.attempts == 4
    assert info.value.last is errors[3]
    assert info.value.__cause__ is errors[3]
    assert "4 attempt(s)" in str(info.value) and "failure 4" in str(info.value)


async def test_stops_when_the_total_time_budget_would_be_passed() -> None:
    """Each attempt takes 1 s and each sleep 1 s (fake time), the budget is 3.5 s: attempt 1 ends
    at 1 s, sleep to 2 s, attempt 2 ends at 3 s; another sleep would pass 3.5 s, so it stops at 2
    attempts although 100 are allowed.

    Bug: the total-time stop reads tenacity's own `time.monotonic`, not the policy's clock, so the
    budget is measured on another clock than the per-attempt deadlines (with an injected sleep it
    never triggers at all and the policy runs all its attempts)."""
    t = FakeTime()
    start = t.now
    attempt = Attempts(t, always(grpc.StatusCode.UNAVAILABLE), cost_s=1.0)
    p = policy("fixed", base_s=1.0, cap_s=1.0, max_attempts=100, max_total_s=3.5)
    with pytest.raises(RetryExhausted) as info:
        await p.call(attempt, sleep=t.sleep, clock=t.clock)
    assert attempt.count == 2, f"{attempt.count} attempts over {t.now - start:g} s of fake time"
    assert info.value.attempts == 2
    assert t.now - start <= 3.5


async def test_attempt_timeout_is_shortened_by_the_remaining_budget() -> None:
    """Attempt 1 gets the full per-attempt timeout (2 s) and uses 1.5 s; after a 1 s sleep 1 s of
    the 3.5 s budget is left, so attempt 2's deadline is 1 s, not 2 s."""
    t = FakeTime()
    attempt = Attempts(t, always(grpc.StatusCode.DEADLINE_EXCEEDED, 1), cost_s=1.5)
    p = policy(
        "fixed", base_s=1.0, cap_s=1.0, max_attempts=2, max_total_s=3.5, attempt_timeout_s=2.0
    )
    assert await p.call(attempt, sleep=t.sleep, clock=t.clock) == "ok after 2"
    assert attempt.timeouts == pytest.approx([2.0, 1.0])


async def test_success_after_retries_returns_the_value_and_reports_each_step() -> None:
    t = FakeTime()
    attempt = Attempts(t, always(grpc.StatusCode.UNAVAILABLE, 2))
    seen: list[tuple[int, BaseException | None]] = []
    slept: list[float] = []
    value = await policy("exponential").call(
        attempt,
        sleep=t.sleep,
        clock=t.clock,
        on_attempt=lambda n, err: seen.append((n, err)),
        on_sleep=slept.append,
    )
    assert value == "ok after 3"
    assert seen == [(1, attempt.raised[0]), (2, attempt.raised[1]), (3, None)]
    assert slept == t.sleeps == [expo(1), expo(2)]


# -- which errors are retried -------------------------------------------------------------------


def by_name(code: grpc.StatusCode) -> str:
    return code.name


RETRYABLE = sorted(RETRYABLE_CODES, key=by_name)
NON_RETRYABLE = [
    code
    for code in sorted(grpc.StatusCode.__members__.values(), key=by_name)
    if code not in RETRYABLE_CODES and code != grpc.StatusCode.OK
]


@pytest.mark.parametrize("code", RETRYABLE, ids=by_name)
async def test_retryable_codes_are_retried(code: grpc.StatusCode) -> None:
    t = FakeTime()
    attempt = Attempts(t, always(code))
    with pytest.raises(RetryExhausted) as info:
        await policy("full", max_attempts=5).call(attempt, sleep=t.sleep, clock=t.clock)
    assert attempt.count == 5
    assert isinstance(info.value.last, grpc.aio.AioRpcError) and info.value.last.code() == code


def test_exactly_three_codes_are_retryable() -> None:
    assert {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    } == RETRYABLE_CODES


@pytest.mark.parametrize("code", NON_RETRYABLE, ids=by_name)
async def test_other_codes_fail_at_once_with_the_error_itself(code: grpc.StatusCode) -> None:
    t = FakeTime()
    errors = always(code)
    attempt = Attempts(t, errors)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await policy("full").call(attempt, sleep=t.sleep, clock=t.clock)
    assert info.value is errors[0]
    assert attempt.count == 1 and t.sleeps == []


async def test_non_grpc_errors_are_not_retried() -> None:
    t = FakeTime()
    error = ValueError("bug in the caller")
    attempt = Attempts(t, [error])
    with pytest.raises(ValueError) as info:
        await policy("full").call(attempt, sleep=t.sleep, clock=t.clock)
    assert info.value is error and attempt.count == 1


async def test_cancellation_is_not_retried() -> None:
    t = FakeTime()
    attempt = Attempts(t, [asyncio.CancelledError()])
    with pytest.raises(asyncio.CancelledError):
        await policy("full").call(attempt, sleep=t.sleep, clock=t.clock)
    assert attempt.count == 1


# -- misuse fails loudly ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "jittery"}, r"unknown retry policy 'jittery'; choose from none, fixed"),
        ({"base_s": 0.0}, r"base must be > 0, got 0"),
        ({"base_s": -1.0}, r"base must be > 0, got -1"),
        ({"base_s": math.nan}, r"base must be > 0, got nan"),
        ({"cap_s": 0.05}, r"cap \(0.05\) must be >= base \(0.1\)"),
        ({"max_attempts": 0}, r"attempts must be in 1..100, got 0"),
        ({"max_attempts": 101}, r"attempts must be in 1..100, got 101"),
        ({"max_total_s": 0.0}, r"max total time must be > 0, got 0"),
        ({"attempt_timeout_s": -2.0}, r"attempt timeout must be > 0, got -2"),
    ],
)
def test_invalid_policies_raise_a_clear_value_error(
    kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"name": "full", "base_s": BASE, "cap_s": CAP} | kwargs
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**args)  # type: ignore[arg-type]


def test_policy_names_are_parsed_with_clear_errors() -> None:
    assert parse_policy_names(" full, equal ,none") == ["full", "equal", "none"]
    with pytest.raises(ValueError, match="no retry policy named"):
        parse_policy_names(" , ")
    with pytest.raises(ValueError, match=r"unknown retry policy bogus, nope; choose from none"):
        parse_policy_names("full,bogus,nope")


# -- grpc-native: gRPC retries, the application calls once ---------------------------------------


def test_grpc_native_service_config_follows_the_policy() -> None:
    config = json.loads(policy("grpc-native", max_attempts=8).grpc_service_config() or "")
    assert config == {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.100000000s",
                    "maxBackoff": "5.000000000s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
                },
            }
        ]
    }
    throttled = policy("grpc-native", max_attempts=3, grpc_max_tokens=10, grpc_token_ratio=0.1)
    config = json.loads(throttled.grpc_service_config() or "")
    assert config["methodConfig"][0]["retryPolicy"]["maxAttempts"] == 3
    assert config["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}


def test_grpc_native_with_one_attempt_has_no_retry_policy() -> None:
    """gRFC A6 rejects maxAttempts < 2; one attempt means no retryPolicy at all."""
    assert json.loads(policy("grpc-native", max_attempts=1).grpc_service_config() or "") == {}


@pytest.mark.parametrize("name", [n for n in POLICY_NAMES if n != "grpc-native"])
def test_other_policies_have_no_service_config(name: str) -> None:
    assert policy(name).grpc_service_config() is None


async def test_grpc_native_makes_one_call_with_the_whole_budget() -> None:
    t = FakeTime()
    errors = always(grpc.StatusCode.UNAVAILABLE)
    attempt = Attempts(t, errors)
    p = policy("grpc-native", max_attempts=5, max_total_s=7.0, attempt_timeout_s=1.0)
    with pytest.raises(RetryExhausted) as info:
        await p.call(attempt, sleep=t.sleep, clock=t.clock)
    assert attempt.timeouts == [7.0] and t.sleeps == []
    assert info.value.attempts == 1 and info.value.last is errors[0]
    ok = Attempts(t, [])
    assert await p.call(ok, sleep=t.sleep, clock=t.clock) == "ok after 1"


def test_grpc_throttling_is_bounded() -> None:
    with pytest.raises(ValueError, match=r"grpc max tokens must be in 1..1000"):
        policy("grpc-native", grpc_max_tokens=0)
    with pytest.raises(ValueError, match=r"grpc token ratio must be in \(0, 1000\]"):
        policy("grpc-native", grpc_token_ratio=0.0)
