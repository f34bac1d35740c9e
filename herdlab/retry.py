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
    grpc-native   gRPC's own retries (`grpc_service_config`); the application never sleeps

tenacity's own jittered waits draw from the module-level `random`; the jittered waits here take a
`random.Random`, so a seed reproduces a run exactly.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, TypeVar

import grpc
import tenacity
from tenacity import RetryCallState
from tenacity.wait import wait_base

from herdlab.guards import GuardRejected, GuardSet, Outcome

T = TypeVar("T")

# The policies that draw their sleeps at random.
JITTERED = ("full", "equal", "decorrelated", "additive")
GRPC_NATIVE = "grpc-native"
POLICY_NAMES = ("none", "fixed", "exponential", *JITTERED, GRPC_NATIVE)
# gRFC A6 caps maxAttempts at 5: gRPC silently lowers a larger value to 5.
GRPC_MAX_ATTEMPTS = 5
# What gRPC itself retries under grpc-native. DEADLINE_EXCEEDED is not among them: see
# `RetryPolicy.grpc_service_config`.
GRPC_RETRYABLE_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")

# An attempt is never sent with less time than this left of its policy's budget.
MIN_SEND_S = 0.001
# gRFC A6 server pushback: the trailing metadata key by which a server says when to retry.
PUSHBACK_KEY = "grpc-retry-pushback-ms"

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

    `grpc-native` hands the retries to gRPC (gRFC A6, as in grpc's examples/python/retry): the
    caller's channel carries `grpc_service_config()` and `call()` makes one call whose deadline is
    `max_total_s`; gRPC makes up to min(5, `max_attempts`) attempts inside it, sleeping its own
    backoff (`base_s` growing x2 up to `cap_s`; C-core jitters it +-20%), and `attempt_timeout_s`
    is not used (gRPC has no per-attempt deadline here). Those attempts are invisible to the
    application: `on_attempt` sees one attempt per call, so whoever counts attempts at the caller
    counts calls; the server's record (or the channel's channelz subchannel, `calls_started`) is
    where they show. `grpc_max_tokens` adds A6 `retryThrottling` with `grpc_token_ratio`: the
    channel starts with maxTokens, a retryable failure costs 1, a success refunds tokenRatio, and
    no retry is made while tokens <= maxTokens / 2 (A6's example: 10 and 0.1). The bucket lives
    in the channel, so it throttles every call on that channel together.
    """

    name: str = "full"
    base_s: float = 0.1
    cap_s: float = 5.0
    max_attempts: int = 6
    max_total_s: float = 30.0
    attempt_timeout_s: float = 2.0
    retry_codes: frozenset[grpc.StatusCode] = RETRYABLE_CODES
    seed: int | None = None
    grpc_max_tokens: int | None = None
    grpc_token_ratio: float = 0.1
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
        if self.grpc_max_tokens is not None and not 1 <= self.grpc_max_tokens <= 1000:
            raise ValueError(
                "retry policy grpc max tokens must be in 1..1000 (gRFC A6), "
                f"got {self.grpc_max_tokens}"
            )
        if not 0 < self.grpc_token_ratio <= 1000:
            raise ValueError(
                f"retry policy grpc token ratio must be in (0, 1000], got {self.grpc_token_ratio}"
            )
        if self.seed is not None:
            # Its own generator: a copy made with dataclasses.replace must not re-seed (and so
            # rewind) the original's.
            object.__setattr__(self, "rng", random.Random(self.seed))

    def with_seed(self, seed: int | None) -> RetryPolicy:
        """The same policy with its own random source seeded by `seed`."""
        return replace(self, seed=seed, rng=random.Random())

    @property
    def attempts(self) -> int:
        """Attempts the application makes: under grpc-native one call, gRPC's attempts inside."""
        return 1 if self.name in ("none", GRPC_NATIVE) else self.max_attempts

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
            GRPC_NATIVE: tenacity.wait_none,
        }
        return waits[self.name]()

    def grpc_service_config(self) -> str | None:
        """The `grpc.service_config` JSON for a grpc-native channel; None for every other policy.

        maxAttempts is min(5, `max_attempts`) (A6 caps it at 5, and requires at least 2: with one
        attempt there is no retryPolicy). Only UNAVAILABLE and RESOURCE_EXHAUSTED are retried.
        DEADLINE_EXCEEDED is not: the deadline gRPC knows is the whole call's, so when it expires
        the call is over and no attempt can follow (A6 would retry only a DEADLINE_EXCEEDED status
        sent by the server). The tenacity policies retry it because each of their attempts has
        its own, shorter deadline. The method config names no service, so it covers every method
        of the channel: the lab gives the policy's channels one service each.
        """
        if self.name != GRPC_NATIVE:
            return None
        config: dict[str, object] = {}
        attempts = min(GRPC_MAX_ATTEMPTS, self.max_attempts)
        if attempts >= 2:
            config["methodConfig"] = [
                {
                    "name": [{}],
                    "retryPolicy": {
                        "maxAttempts": attempts,
                        "initialBackoff": f"{self.base_s:.9f}s",
                        "maxBackoff": f"{self.cap_s:.9f}s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": list(GRPC_RETRYABLE_CODES),
                    },
                }
            ]
        if self.grpc_max_tokens is not None:
            config["retryThrottling"] = {
                "maxTokens": self.grpc_max_tokens,
                "tokenRatio": round(self.grpc_token_ratio, 3),
            }
        return json.dumps(config)

    def is_retryable(self, exc: BaseException) -> bool:
        """A retryable gRPC code, or a guard's refusal (nothing was sent: try again later)."""
        if isinstance(exc, GuardRejected):
            return True
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
        guards: GuardSet | None = None,
        budget_s: float | None = None,
        pushback: bool = False,
    ) -> T:
        """Runs `attempt(timeout_s)` under this policy and returns its value.

        Raises `RetryExhausted` wrapping the last error when the policy gives up, or the error
        itself when it is not retryable. `on_attempt(n, error_or_None)` runs after every attempt;
        `on_sleep(seconds)` before every sleep. `sleep` is injectable so tests record schedules.

        grpc-native: one `attempt(max_total_s)`, no sleep here (gRPC retries inside the call when
        the channel has `grpc_service_config()`); a retryable error it ends with is still wrapped
        in `RetryExhausted`, with `attempts` 1.

        `guards` (`herdlab.guards`) are asked before every attempt, the first with `retry=False`
        until one has been sent; a guard that waits (a concurrency limit) waits at most what is
        left of the total budget, and the attempt's deadline then counts from the send. A refusal
        (`GuardRejected`) is an attempt not sent: the policy counts it, sleeps its backoff and
        tries again within its bounds, and gives up with `RetryExhausted` wrapping the refusal.
        An attempt the guards' wait left no time for is not sent either (`GuardRejected` from
        "deadline"). Each sent attempt's outcome is reported to the guards: OK, OVERLOAD
        (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED of the attempt's own deadline) or
        IGNORE (anything else, and a deadline the total budget cut short).

        `budget_s` shortens the total budget for this call (a caller's own deadline: every attempt
        and sleep fits in it). With `pushback` a failed attempt whose trailing metadata carries
        `grpc-retry-pushback-ms` (gRFC A6) is retried after exactly that, within the same bounds,
        and not at all when the value is negative or malformed.
        """
        started = clock()
        total_s = (
            self.max_total_s if budget_s is None else max(0.0, min(self.max_total_s, budget_s))
        )
        if guards is not None and not guards.guards:
            guards = None  # the empty set admits everything: no permit to take per attempt
        native = self.name == GRPC_NATIVE
        attempts = 0

        sent = 0

        async def one() -> T:
            nonlocal attempts, sent
            attempts += 1
            permit = None
            if guards is not None:
                left = total_s - (clock() - started)
                permit = await guards.acquire(retry=sent > 0, timeout_s=max(0.001, left))
            remaining = total_s - (clock() - started)
            if permit is not None and remaining < MIN_SEND_S:
                # The guards' wait took the budget: sending now would only spend the server's
                # time on an answer nobody can use.
                permit.done(Outcome.IGNORE, 0.0)
                raise GuardRejected("deadline", "no time left to send after waiting")
            per_attempt = total_s if native else self.attempt_timeout_s
            timeout = max(MIN_SEND_S, min(per_attempt, remaining))
            cut = timeout < per_attempt  # the total budget, not the attempt's deadline, bounds it
            sent += 1
            sent_at = clock()
            try:
                value = await attempt(timeout)
            except grpc.aio.AioRpcError as exc:
                if permit is not None:
                    # A deadline the budget cut short says nothing of the server's load.
                    expired = exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED and cut
                    overload = exc.code() in RETRYABLE_CODES and not expired
                    permit.done(Outcome.OVERLOAD if overload else Outcome.IGNORE, clock() - sent_at)
                if on_attempt:
                    on_attempt(attempts, exc)
                raise
            except BaseException:
                if permit is not None:
                    permit.done(Outcome.IGNORE, 0.0)
                raise
            if permit is not None:
                permit.done(Outcome.OK, clock() - sent_at)
            if on_attempt:
                on_attempt(attempts, None)
            return value

        try:
            if native:
                return await one()
            stop = tenacity.stop_after_attempt(self.attempts) | stop_before_total(
                clock, started, total_s
            )
            retrying = tenacity.AsyncRetrying(
                wait=_wait_pushback(self.wait()) if pushback else self.wait(),
                stop=stop | stop_pushback_refuses() if pushback else stop,
                retry=tenacity.retry_if_exception(self.is_retryable),
                before_sleep=(lambda rs: on_sleep(rs.upcoming_sleep)) if on_sleep else None,
                reraise=True,
                sleep=sleep if sleep is not None else asyncio.sleep,
            )
            return await retrying(one)
        except grpc.aio.AioRpcError as exc:
            if self.is_retryable(exc):
                raise RetryExhausted(exc, attempts) from exc
            raise
        except GuardRejected as exc:
            raise RetryExhausted(exc, attempts) from exc


def pushback_s(error: BaseException) -> float | None:
    """The server's pushback on a failed attempt (gRFC A6), in seconds: None when the error carries
    none; a negative value when it says not to retry (a negative or malformed pushback)."""
    if not isinstance(error, grpc.aio.AioRpcError):
        return None
    entries: Any = error.trailing_metadata() or ()  # (key, value) pairs at runtime
    for key, value in entries:
        if key == PUSHBACK_KEY:
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            return int(text) / 1000 if text.isdigit() else -1.0
    return None


class _wait_pushback(wait_base):
    """The server's pushback when the failed attempt carries one (gRFC A6: the next attempt
    waits exactly that), else the policy's own wait."""

    def __init__(self, wait: wait_base) -> None:
        self.wait = wait

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        pushed = None if error is None else pushback_s(error)
        if pushed is not None and pushed >= 0:
            return pushed
        return self.wait(retry_state)


class stop_pushback_refuses(tenacity.stop.stop_base):
    """Stops when the failed attempt's server said not to retry (a negative pushback)."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        pushed = None if error is None else pushback_s(error)
        return pushed is not None and pushed < 0


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
