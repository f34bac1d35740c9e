"""Retry policies: named, bounded, seedable values built on tenacity.

One implementation serves the cache's DB client and the herd's clients alike. A policy is
`wait` (how long to sleep before retry n) + `stop` (attempts AND total time, whichever comes
first) + which gRPC codes are retried + a deadline on every attempt.

The waits, with `expo(n) = min(cap, base * 2**(n-1))` for the n-th retry (n = 1, 2, ...):

    none          one attempt, no retry
    fixed         base
    exponential   expo(n)                                 (no jitter: every caller in step)
    full          uniform(0, expo(n))                     (Brooker's Full Jitter)
    equal         expo(n)/2 + uniform(0, expo(n)/2)       (Equal Jitter)
    decorrelated  min(cap, uniform(base, 3 * previous))   (previous starts at base)
    additive      expo(n) + uniform(0, expo(n))           (the workshop's b + uniform(0, b))

tenacity's own jittered waits draw from the module-level `random`; the jittered waits here take a
`random.Random`, so a seed reproduces a run exactly.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TypeVar

import grpc
import tenacity
from tenacity import RetryCallState
from tenacity.wait import wait_base

T = TypeVar("T")

POLICY_NAMES = ("none", "fixed", "exponential", "full", "equal", "decorrelated", "additive")
JITTERED = frozenset({"full", "equal", "decorrelated", "additive"})

RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


def _expo(base: float, cap: float, retry_number: int) -> float:
    """`min(cap, base * 2**(n-1))`, computed without overflow for any n >= 1."""
    exponent = min(retry_number - 1, 62)
    return min(cap, base * float(2**exponent))


class _JitterWait(wait_base):
    """A tenacity wait whose randomness comes from an injected `random.Random`."""

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng


class wait_full_jitter(_JitterWait):
    """`uniform(0, expo(n))`: spreads retries evenly below the exponential curve."""

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.rng.uniform(0.0, _expo(self.base, self.cap, retry_state.attempt_number))


class wait_equal_jitter(_JitterWait):
    """`expo(n)/2 + uniform(0, expo(n)/2)`: keeps at least half the backoff."""

    def __call__(self, retry_state: RetryCallState) -> float:
        half = _expo(self.base, self.cap, retry_state.attempt_number) / 2.0
        return half + self.rng.uniform(0.0, half)


class wait_decorrelated_jitter(_JitterWait):
    """`min(cap, uniform(base, 3 * previous))`, previous starting at base.

    The previous sleep is read from tenacity's call state (`upcoming_sleep` still holds the last
    sleep when the wait is asked for the next one), so one wait object serves many callers.
    """

    def __call__(self, retry_state: RetryCallState) -> float:
        previous = retry_state.upcoming_sleep or self.base
        return min(self.cap, self.rng.uniform(self.base, previous * 3.0))


class wait_additive_jitter(_JitterWait):
    """`b + uniform(0, b)` with `b = expo(n)`: the workshop's formula; at most 2 * cap."""

    def __call__(self, retry_state: RetryCallState) -> float:
        b = _expo(self.base, self.cap, retry_state.attempt_number)
        return b + self.rng.uniform(0.0, b)


class wait_exponential_capped(wait_base):
    """`expo(n)` with no jitter: every caller that failed together retries together."""

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        return _expo(self.base, self.cap, retry_state.attempt_number)


class stop_before_total(tenacity.stop.stop_base):
    """Stops before a sleep that would end past `max_total_s` since `started`, on `clock`.

    tenacity's `stop_before_delay` reads its own monotonic clock; this one reads the policy's, so
    the total-time bound holds with an injected clock too (and tests need no real time).
    """

    def __init__(self, clock: Callable[[], float], started: float, max_total_s: float) -> None:
        self.clock = clock
        self.started = started
        self.max_total_s = max_total_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.clock() - self.started + retry_state.upcoming_sleep >= self.max_total_s


class RetryExhausted(Exception):
    """Raised when a policy gives up; carries the last error and the attempts made."""

    def __init__(self, last: BaseException, attempts: int) -> None:
        super().__init__(f"gave up after {attempts} attempt(s): {last}")
        self.last = last
        self.attempts = attempts


@dataclass(frozen=True)
class RetryPolicy:
    """A named retry policy. Bounded by `max_attempts` and by `max_total_s`, always.

    `attempt_timeout_s` is the gRPC deadline of each attempt (tenacity's stop cannot interrupt a
    running attempt, so the deadline does); it is shortened so no attempt outlives the total
    budget. `seed` makes the jitter reproducible; `None` seeds from the OS.
    """

    name: str = "full"
    base_s: float = 0.1
    cap_s: float = 5.0
    max_attempts: int = 6
    max_total_s: float = 30.0
    attempt_timeout_s: float = 2.0
    retry_codes: frozenset[grpc.StatusCode] = RETRYABLE_CODES
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.name not in POLICY_NAMES:
            raise ValueError(
                f"unknown retry policy {self.name!r}; choose from {', '.join(POLICY_NAMES)}"
            )
        for label, value in (
            ("base", self.base_s),
            ("cap", self.cap_s),
            ("max total time", self.max_total_s),
            ("attempt timeout", self.attempt_timeout_s),
        ):
            if not value > 0:
                raise ValueError(f"retry policy {label} must be > 0, got {value}")
        if self.cap_s < self.base_s:
            raise ValueError(f"retry policy cap ({self.cap_s}) must be >= base ({self.base_s})")
        if not 1 <= self.max_attempts <= 100:
            raise ValueError(f"retry policy attempts must be in 1..100, got {self.max_attempts}")
        if self.seed is not None:
            # Its own generator: a copy made with dataclasses.replace must not re-seed (and so
            # rewind) the original's.
            object.__setattr__(self, "rng", random.Random(self.seed))

    def with_seed(self, seed: int | None) -> RetryPolicy:
        """The same policy with its own random source seeded by `seed`."""
        return replace(self, seed=seed, rng=random.Random())

    @property
    def attempts(self) -> int:
        return 1 if self.name == "none" else self.max_attempts

    def wait(self) -> wait_base:
        """The tenacity wait strategy for this policy (one object, shared by all callers)."""
        return self._wait

    @cached_property
    def _wait(self) -> wait_base:
        # Built once per policy: the waits are stateless (decorrelated reads the previous sleep
        # from tenacity's call state), so every call and every caller can share it.
        b, c, r = self.base_s, self.cap_s, self.rng
        waits: dict[str, Callable[[], wait_base]] = {
            "none": tenacity.wait_none,
            "fixed": lambda: tenacity.wait_fixed(b),
            "exponential": lambda: wait_exponential_capped(b, c),
            "full": lambda: wait_full_jitter(b, c, r),
            "equal": lambda: wait_equal_jitter(b, c, r),
            "decorrelated": lambda: wait_decorrelated_jitter(b, c, r),
            "additive": lambda: wait_additive_jitter(b, c, r),
        }
        return waits[self.name]()

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in self.retry_codes

    def schedule(self, retries: int) -> list[float]:
        """The sleeps one caller would take before retries 1..n, drawn from this policy's rng."""
        wait = self.wait()
        state = RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
        sleeps = []
        for n in range(1, retries + 1):
            state.attempt_number = n
            state.upcoming_sleep = wait(state)
            sleeps.append(state.upcoming_sleep)
        return sleeps

    async def call(
        self,
        attempt: Callable[[float], Awaitable[T]],
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        on_attempt: Callable[[int, BaseException | None], None] | None = None,
        on_sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> T:
        """Runs `attempt(timeout_s)` under this policy and returns its value.

        Raises `RetryExhausted` wrapping the last error when the policy gives up, or the error
        itself when it is not retryable. `on_attempt(n, error_or_None)` runs after every attempt;
        `on_sleep(seconds)` before every sleep. `sleep` is injectable so tests record schedules.
        """
        started = clock()
        retrying = tenacity.AsyncRetrying(
            wait=self.wait(),
            stop=tenacity.stop_after_attempt(self.attempts)
            | stop_before_total(clock, started, self.max_total_s),
            retry=tenacity.retry_if_exception(self.is_retryable),
            before_sleep=(lambda rs: on_sleep(rs.upcoming_sleep)) if on_sleep else None,
            reraise=True,
            sleep=sleep if sleep is not None else asyncio.sleep,
        )
        attempts = 0

        async def one() -> T:
            nonlocal attempts
            attempts += 1
            remaining = self.max_total_s - (clock() - started)
            timeout = max(0.001, min(self.attempt_timeout_s, remaining))
            try:
                value = await attempt(timeout)
            except grpc.aio.AioRpcError as exc:
                if on_attempt:
                    on_attempt(attempts, exc)
                raise
            if on_attempt:
                on_attempt(attempts, None)
            return value

        try:
            return await retrying(one)
        except grpc.aio.AioRpcError as exc:
            if self.is_retryable(exc):
                raise RetryExhausted(exc, attempts) from exc
            raise


def parse_policy_names(text: str) -> list[str]:
    """Parses `a,b,c` into policy names, rejecting unknown ones with a clear message."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("no retry policy named")
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown:
        raise ValueError(
            f"unknown retry policy {', '.join(unknown)}; choose from {', '.join(POLICY_NAMES)}"
        )
    return names
