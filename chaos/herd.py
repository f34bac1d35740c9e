"""The herd: N synchronised virtual users, the thing that makes a stampede.

"Everyone hits refresh at 12:00:00": every user is created, connected and parked on a barrier
first; the barrier opens once all N are waiting, and each sends its request(s) to the cache.
Users are spread over M channels, each its own TCP connection, so a cache restart causes M
reconnects. Each user retries under a named policy (the same `RetryPolicy` the cache uses towards
the DB) within its deadline.

Every request ends with a value or a typed gRPC error within its deadline. A request that does not
(an unexpected exception, or one still running past deadline + margin) is counted as `lost`: the
lab's invariant is that `lost` is always 0. Every value received is checked against the DB's
deterministic value for its key and version (`wrong_values`, also always 0).

Times in results are wall-clock nanoseconds, comparable with the services' own event records.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import prometheus_client
from prometheus_client import CollectorRegistry, Histogram

from herdlab.grpcutil import Reconnect, channel_options
from herdlab.metrics import PREFIX
from herdlab.retry import RetryExhausted, RetryPolicy
from herdlab.values import value_for
from protos import cache_pb2, cache_pb2_grpc

DISTRIBUTIONS = ("hot", "uniform", "zipf", "round-robin")
# How long the herd waits for its channels before releasing anyway: a hung or absent cache must
# give users typed errors within their deadlines, not stop the herd from starting.
CONNECT_TIMEOUT_S = 5.0
LOST_MARGIN_S = 5.0
SOURCE_NAMES = {v: k for k, v in cache_pb2.Source.items()}


@dataclass(frozen=True)
class HerdConfig:
    target: str
    users: int = 1000
    keys: int = 1
    distribution: str = "hot"
    zipf_s: float = 1.1
    key_prefix: str = "key-"
    requests_per_user: int = 1
    think_s: float = 0.0  # pause between one user's requests
    channels: int = 8
    # The policy's total budget (`max_total_s`) is each request's deadline.
    policy: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(name="none", max_total_s=10.0, attempt_timeout_s=10.0)
    )
    reconnect: Reconnect | None = None
    seed: int | None = None

    def problems(self) -> list[str]:
        found = []
        if not 1 <= self.users <= 100_000:
            found.append(f"users must be in 1..100000, got {self.users}")
        if not 1 <= self.keys <= 10_000_000:
            found.append(f"keys must be in 1..10000000, got {self.keys}")
        if self.distribution not in DISTRIBUTIONS:
            found.append(
                f"unknown distribution {self.distribution!r}; choose from "
                + ", ".join(DISTRIBUTIONS)
            )
        if not 1 <= self.channels <= 1024:
            found.append(f"channels must be in 1..1024, got {self.channels}")
        if not 1 <= self.requests_per_user <= 10_000:
            found.append(f"requests per user must be in 1..10000, got {self.requests_per_user}")
        if self.policy.max_total_s > 3600:
            found.append(f"deadline must be at most 1h, got {self.policy.max_total_s:g}s")
        if not 0 <= self.think_s <= 60:
            found.append(f"think time must be in [0, 60s], got {self.think_s:g}s")
        if not self.zipf_s > 0:
            found.append(f"zipf exponent must be > 0, got {self.zipf_s}")
        return found


@dataclass
class Outcome:
    """One request's end: a source name (HIT, MISS, ...) or an error code name, and its times."""

    user: int
    key: str
    source: str | None
    code: str | None
    attempts: int
    sent_ns: int
    done_ns: int

    @property
    def latency_s(self) -> float:
        return (self.done_ns - self.sent_ns) / 1e9


@dataclass
class HerdResult:
    users: int
    outcomes: list[Outcome]
    release_ns: int  # when the barrier opened
    release_spread_s: float  # from the barrier's opening to the last user's first send
    lost: Counter[str]  # requests that ended with neither a value nor a typed error, by cause
    wrong_values: int
    seconds: float
    attempt_times_ns: list[int] = field(default_factory=list)  # every attempt towards the cache
    connected_channels: int = 0  # channels READY when the barrier opened
    # (time, channel index, connectivity state name) for every channel state change
    channel_events: list[tuple[int, int, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ok = [o for o in self.outcomes if o.code is None]
        latencies = sorted(o.latency_s for o in self.outcomes)
        return {
            "sent": len(self.outcomes) + self.lost.total(),
            "ok": len(ok),
            "errors": dict(Counter(o.code for o in self.outcomes if o.code is not None)),
            "lost": self.lost.total(),
            "wrong_values": self.wrong_values,
            "sources": dict(Counter(o.source for o in ok if o.source is not None)),
            "latency_s": {
                "p50": _quantile(latencies, 0.50),
                "p99": _quantile(latencies, 0.99),
                "max": latencies[-1] if latencies else 0.0,
            },
            "attempts": sum(o.attempts for o in self.outcomes),
            "release_spread_s": self.release_spread_s,
            "connected_channels": self.connected_channels,
            "seconds": self.seconds,
        }


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[max(0, index)]


class KeyChooser:
    """Draws keys `<prefix>0 .. <prefix>K-1`: one hot key, uniform, zipf(s) by rank, or
    round-robin (draw i gets key i mod K, so K users need every key exactly once)."""

    def __init__(self, config: HerdConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self._draws = itertools.count()
        self._cumulative: list[float] = []
        if config.distribution == "zipf":
            weights = (1.0 / (rank**config.zipf_s) for rank in range(1, config.keys + 1))
            self._cumulative = list(itertools.accumulate(weights))

    def __call__(self) -> str:
        c = self.config
        draw = next(self._draws)
        if c.distribution == "hot" or c.keys == 1:
            index = 0
        elif c.distribution == "round-robin":
            index = draw % c.keys
        elif c.distribution == "uniform":
            index = self.rng.randrange(c.keys)
        else:
            point = self.rng.uniform(0.0, self._cumulative[-1])
            index = min(bisect.bisect_left(self._cumulative, point), c.keys - 1)
        return f"{c.key_prefix}{index}"


ProgressFn = Callable[[int, int], None]
# Makes the progress callback of one phase, by its title (None: no display).
ProgressFactory = Callable[[str], ProgressFn | None]


class HerdMetrics:
    """The herd's own view, for Prometheus: requests by result (ok or the gRPC code)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = prometheus_client.Counter(
            f"{PREFIX}_herd_requests",
            "Herd requests finished, by result (ok, a gRPC code name, or lost).",
            ["result"],
            registry=registry,
        )
        self.attempts = prometheus_client.Counter(
            f"{PREFIX}_herd_attempts", "Attempts made by herd users.", registry=registry
        )
        self.latency = Histogram(
            f"{PREFIX}_herd_request_latency_seconds",
            "Time from a user's request to its value or error, retries included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )

    def observe(self, outcome: Outcome) -> None:
        self.requests.labels("ok" if outcome.code is None else outcome.code.lower()).inc()
        self.attempts.inc(outcome.attempts)
        self.latency.observe(outcome.latency_s)


@dataclass
class HerdHooks:
    """Optional observers: progress as requests finish, the barrier's opening, metrics."""

    on_progress: ProgressFn | None = None
    on_release: Callable[[], None] | None = None
    metrics: HerdMetrics | None = None


async def run_herd(config: HerdConfig, hooks: HerdHooks | None = None) -> HerdResult:
    """Runs the herd to completion and returns every request's outcome."""
    problems = config.problems()
    if problems:
        raise ValueError("; ".join(problems))
    rng = random.Random(config.seed)
    choose = KeyChooser(config, rng)
    policy = config.policy.with_seed(rng.randrange(2**32) if config.seed is not None else None)
    channels = [
        grpc.aio.insecure_channel(
            config.target, options=channel_options(local_pool=True, reconnect=config.reconnect)
        )
        for _ in range(config.channels)
    ]
    events: list[tuple[int, int, str]] = []
    watchers = [
        asyncio.create_task(_watch(channel, index, events))
        for index, channel in enumerate(channels)
    ]
    try:
        connected = await _connect(channels)
        stubs = [cache_pb2_grpc.CacheStub(ch) for ch in channels]
        result = await _Run(config, stubs, choose, policy, hooks or HerdHooks()).run()
        result.channel_events = events
        result.connected_channels = connected
        return result
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await asyncio.gather(*(ch.close(grace=None) for ch in channels))


async def _watch(channel: grpc.aio.Channel, index: int, events: list[tuple[int, int, str]]) -> None:
    """Records every connectivity change of `channel` until cancelled (when the herd ends)."""
    state = channel.get_state(try_to_connect=False)
    events.append((time.time_ns(), index, state.name))
    while True:
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=False)
        events.append((time.time_ns(), index, state.name))


async def _connect(channels: list[grpc.aio.Channel]) -> int:
    """Waits (bounded) for every channel to be READY; returns how many are."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(ch.channel_ready() for ch in channels)), CONNECT_TIMEOUT_S
        )
    return sum(
        ch.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY for ch in channels
    )


class _Run:
    """One herd run: the users, the barrier and what they saw."""

    def __init__(
        self,
        config: HerdConfig,
        stubs: list[cache_pb2_grpc.CacheAsyncStub],
        choose: KeyChooser,
        policy: RetryPolicy,
        hooks: HerdHooks,
    ) -> None:
        self.config = config
        self.stubs = stubs
        self.policy = policy
        self.hooks = hooks
        self.user_keys = [
            [choose() for _ in range(config.requests_per_user)] for _ in range(config.users)
        ]
        self.total = config.users * config.requests_per_user
        self.outcomes: list[Outcome] = []
        self.attempt_times: list[int] = []
        self.first_sends: list[int] = []
        self.wrong = 0
        self.lost: Counter[str] = Counter()
        self.waiting = 0
        self.all_waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def run(self) -> HerdResult:
        tasks = [asyncio.create_task(self.user(u)) for u in range(self.config.users)]
        await self.all_waiting.wait()
        release_ns = time.time_ns()
        started = time.monotonic()
        self.release.set()
        if self.hooks.on_release is not None:
            self.hooks.on_release()
        await asyncio.gather(*tasks)
        return HerdResult(
            users=self.config.users,
            outcomes=self.outcomes,
            release_ns=release_ns,
            release_spread_s=(max(self.first_sends) - release_ns) / 1e9 if self.first_sends else 0,
            lost=self.lost,
            wrong_values=self.wrong,
            seconds=time.monotonic() - started,
            attempt_times_ns=self.attempt_times,
        )

    async def user(self, user: int) -> None:
        stub = self.stubs[user % len(self.stubs)]
        self.waiting += 1
        if self.waiting == self.config.users:
            self.all_waiting.set()
        await self.release.wait()
        self.first_sends.append(time.time_ns())
        for number, key in enumerate(self.user_keys[user]):
            if number and self.config.think_s:
                await asyncio.sleep(self.config.think_s)
            try:
                outcome = await asyncio.wait_for(
                    self.request(stub, user, key), self.policy.max_total_s + LOST_MARGIN_S
                )
            except Exception as exc:
                self.lost[type(exc).__name__] += 1
                if self.hooks.metrics is not None:
                    self.hooks.metrics.requests.labels("lost").inc()
                continue
            self.outcomes.append(outcome)
            if self.hooks.metrics is not None:
                self.hooks.metrics.observe(outcome)
            if self.hooks.on_progress is not None:
                self.hooks.on_progress(len(self.outcomes) + self.lost.total(), self.total)

    async def request(self, stub: cache_pb2_grpc.CacheAsyncStub, user: int, key: str) -> Outcome:
        attempts = 0
        sent_ns = time.time_ns()
        request = cache_pb2.CacheGetRequest(key=key)

        async def attempt(timeout_s: float) -> cache_pb2.CacheGetResponse:
            nonlocal attempts
            attempts += 1
            self.attempt_times.append(time.time_ns())
            reply: cache_pb2.CacheGetResponse = await stub.Get(request, timeout=timeout_s)
            return reply

        try:
            reply = await self.policy.call(attempt)
        except RetryExhausted as exc:
            return Outcome(user, key, None, _code(exc.last), attempts, sent_ns, time.time_ns())
        except grpc.aio.AioRpcError as exc:
            return Outcome(user, key, None, _code(exc), attempts, sent_ns, time.time_ns())
        if reply.key != key or reply.value != value_for(key, reply.version):
            self.wrong += 1
        source = SOURCE_NAMES.get(reply.source, "UNKNOWN")
        return Outcome(user, key, source, None, attempts, sent_ns, time.time_ns())


def _code(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return str(error.code().name)
    return type(error).__name__
