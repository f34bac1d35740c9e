"""The herd: load on the cache, as a synchronised burst or as an open loop.

Burst, the thing that makes a stampede. "Everyone hits refresh at 12:00:00": every user is
created, connected and parked on a barrier first; the barrier opens once all N are waiting, and
each sends its request(s) to the cache. A burst is a closed population: it drains, so the storm
it starts always ends by itself.

Open loop (`HerdConfig.open_loop`), the load that can keep a storm going (a metastable failure
needs arrivals that do not slow down when the system does, Huang et al., OSDI 2022): request i is
due at t0 + i / rate for i < rate x duration, on a fixed schedule, sent however slow the answers
are. A loop that falls behind sends its late arrivals at once and reports the lag. At most
`max_in_flight` requests are in flight: an arrival due when the bound is reached is not sent but
counted (`skipped`), with when it happened, so the client's own limit cannot pass for the
system's goodput.

Requests are spread over M channels, each its own TCP connection, so a cache restart causes M
reconnects. Every channel's state changes are recorded; from them the result counts connect
attempts and each connection's time to READY. A burst with more connections than one process's
open files hold runs in several processes (`chaos.engine.herd_fleet`), each a herd of this module
gated by a common release (`HerdHooks.gate`).

A target naming several replicas (`replicas_target`: `ipv4:HOST:P1,HOST:P2,...`) gives every
channel gRPC's client-side `round_robin` over them: each channel connects to every replica and
sends its requests to them in turn, skipping a replica that is down; so does a `dns:` target,
over every address its name resolves to (a Kubernetes headless Service: every ready pod). With
`health_check` (the default of `chaos herd`'s settings) round_robin also skips a replica whose
grpc.health.v1 watch is not SERVING, and the channels ping (keepalive 1 s, ACK within 1 s, unless
set otherwise), so a replica that stops answering (SIGSTOP, a hung host) is taken out of the
rotation within about 2 s instead of holding a third of the requests until their deadline. Each
request retries under a named policy (the same `RetryPolicy` the cache uses towards the DB)
within its deadline, the policy's total budget.

Every request ends with a value or a typed gRPC error within its deadline. A request that does not
(an unexpected exception, or one still running past deadline + margin) is counted as `lost`: the
lab's invariant is that `lost` is always 0. Every value received is checked against the DB's
deterministic value for its key and version (`wrong_values`, also always 0).

With `HerdConfig.call` (`chaos.engine.herd_call`) the herd calls any gRPC method of the user's
own service instead of the cache's `Get`: each request is the call's template filled with its key,
user, sequence number and a uuid; its replies are checked only against the call's expectations
(`wrong_values`), and the summary says whether values were checked at all.

With `HerdConfig.client` "cures" the users' calls retry inside `herdlab.client`'s interceptors on
the herd's channels (`Cures`, the same policy and guard set; each request one call whose deadline
is the policy's total budget, pushback honoured, gRPC's own retries off), as a service using the
library would, instead of in the herd's own loop; the herd still records every attempt sent (the
interceptors' `on_send`, tied to its request by a context variable the interceptors' task copies).

Times in results are wall-clock nanoseconds, comparable with the services' own event records.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import prometheus_client
from prometheus_client import CollectorRegistry, Histogram

from chaos.engine.bounds import out_of_range
from chaos.engine.herd_call import Call
from herdlab.client import CallFailed, Cures
from herdlab.grpcutil import Keepalive, Reconnect, aio_channel, channel_options
from herdlab.guards import GuardRejected, GuardSet, parse_guard_set
from herdlab.guards.metrics import GuardCollector
from herdlab.metrics import HERD_ATTEMPTS, HERD_REQUEST_LATENCY, HERD_REQUESTS
from herdlab.retry import RetryExhausted, RetryPolicy
from herdlab.stats import quantile
from herdlab.values import value_for
from protos import cache_pb2, cache_pb2_grpc

DISTRIBUTIONS = ("hot", "uniform", "zipf", "round-robin", "unique")
# Where the users' retries run: the herd's own loop, or herdlab.client's interceptors.
CLIENTS = ("herd", "cures")
# How long the herd waits for its channels before releasing anyway: a hung or absent cache must
# give users typed errors within their deadlines, not stop the herd from starting.
CONNECT_TIMEOUT_S = 5.0
# ... and a moment more per connection: TLS handshakes take a herd process ~1.5 ms each, and
# thousands of them would not be READY within the fixed bound.
CONNECT_S_PER_CONNECTION = 0.005
LOST_MARGIN_S = 5.0
MAX_RATE_PER_S = 100_000.0
ROUND_ROBIN = ("grpc.lb_policy_name", "round_robin")
# Every arrival keeps its outcome in memory (a few hundred bytes each).
MAX_ARRIVALS = 10_000_000
DEFAULT_MAX_IN_FLIGHT = 10_000
MAX_IN_FLIGHT = 1_000_000
MAX_CONNECTIONS = 100_000
SOURCE_NAMES = {v: k for k, v in cache_pb2.Source.items()}
T = TypeVar("T")


def parse_rate(text: str) -> float:
    """`200/s` or `200` as arrivals per second, in (0, 100000]; ValueError naming the problem."""
    number = text.strip().removesuffix("/s")
    try:
        rate = float(number)
    except ValueError:
        raise ValueError(f"invalid rate {text!r}: write it like 200/s or 200") from None
    if not 0 < rate <= MAX_RATE_PER_S:
        raise ValueError(f"rate must be in (0, 100000]/s, got {text!r}")
    return rate


@dataclass(frozen=True)
class OpenLoop:
    """Arrivals at `rate_per_s` for `duration_s`, at most `max_in_flight` in flight at once."""

    rate_per_s: float
    duration_s: float
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT

    @property
    def arrivals(self) -> int:
        """rate x duration, rounded down (products such as 0.7 x 10 are not exact in binary)."""
        return math.floor(round(self.rate_per_s * self.duration_s, 6))

    def problems(self) -> list[str]:
        found = []
        if not 0 < self.rate_per_s <= MAX_RATE_PER_S:
            found.append(f"rate must be in (0, 100000]/s, got {self.rate_per_s:g}/s")
        found += out_of_range("duration", self.duration_s, "(0, 1h]")
        if not found and not 1 <= self.arrivals <= MAX_ARRIVALS:
            found.append(
                f"rate x duration must give 1..{MAX_ARRIVALS} arrivals, got {self.arrivals}"
            )
        return found + out_of_range("max in flight", self.max_in_flight, f"1..{MAX_IN_FLIGHT}")


@dataclass(frozen=True)
class HerdConfig:
    """A herd as the engine runs it. Users' herds are built by `HerdSettings.config`; the
    defaults here serve code that builds one directly (tests, the benchmark probe)."""

    target: str
    users: int = 1000
    keys: int = 1
    distribution: str = "hot"
    zipf_s: float = 1.1
    key_prefix: str = "key-"
    requests_per_user: int = 1
    think_s: float = 0.0  # pause between one user's requests
    channels: int = 8
    # Set: an open loop instead of the burst (`users`, `requests_per_user`, `think_s` unused).
    open_loop: OpenLoop | None = None
    # The policy's total budget (`max_total_s`) is each request's deadline.
    policy: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(name="none", max_total_s=10.0, attempt_timeout_s=10.0)
    )
    reconnect: Reconnect | None = None
    keepalive: Keepalive | None = None  # the channels' keepalive pings (None: off, gRPC's default)
    # Over several replicas: round_robin skips a replica whose health watch is not SERVING.
    health_check: bool = False
    # Reconnect a channel as soon as it goes IDLE, not at its next call (gRPC's way).
    stay_connected: bool = False
    seed: int | None = None
    # Overload guards around the users' calls (`herdlab.guards`), one set for the whole herd.
    guards: str = "none"
    tls_ca: str | None = None  # the cache serves TLS, verified against this CA file
    # This herd's first key draw in a larger herd split over processes (`herd_fleet`), so the
    # round-robin and unique distributions draw the keys one process would.
    first_draw: int = 0
    # Set: the herd calls this method of the user's service instead of the cache's Get.
    call: Call | None = None
    client: str = "herd"  # a `CLIENTS` name

    def problems(self) -> list[str]:
        """What cannot run. The numbers' bounds are `HerdSettings`' (`chaos.engine.herd_settings`),
        through which users give a herd; these are what the engine itself needs."""
        found = []
        try:
            parse_guard_set(self.guards)
        except ValueError as exc:
            found.append(str(exc))
        if self.client not in CLIENTS:
            found.append(f"client must be one of {', '.join(CLIENTS)}, got {self.client!r}")
        if self.open_loop is not None:
            found += self.open_loop.problems()
        return found


@dataclass
class Outcome:
    """One request's end: a source name (HIT, MISS, ...) or an error code name, and its times.

    `user` is the burst's user, or the open loop's arrival index (due at start + index / rate).
    """

    user: int
    key: str
    source: str | None
    code: str | None
    attempts: int
    sent_ns: int
    done_ns: int
    stale_age_s: float | None = None  # STALE only: how long ago the value expired

    @property
    def latency_s(self) -> float:
        return (self.done_ns - self.sent_ns) / 1e9


@dataclass
class OpenLoopStats:
    """What an open loop's schedule did. Arrival i was due at `start_ns` + i / rate."""

    plan: OpenLoop
    start_ns: int
    skipped_ns: list[int] = field(default_factory=list)  # each arrival not sent: bound reached
    peak_in_flight: int = 0
    max_lag_s: float = 0.0  # the latest an arrival was sent after it was due
    late: int = 0  # arrivals sent after the next one was due: the loop had fallen behind

    def summary(self) -> dict[str, Any]:
        return {
            "rate_per_s": self.plan.rate_per_s,
            "duration_s": self.plan.duration_s,
            "arrivals": self.plan.arrivals,
            "skipped": len(self.skipped_ns),
            "max_in_flight": self.plan.max_in_flight,
            "bound_hit": bool(self.skipped_ns),
            "first_bound_hit_s": (
                (self.skipped_ns[0] - self.start_ns) / 1e9 if self.skipped_ns else None
            ),
            "peak_in_flight": self.peak_in_flight,
            "max_lag_s": self.max_lag_s,
            "late": self.late,
        }


@dataclass
class HerdResult:
    users: int  # the burst's users; 0 for an open loop
    outcomes: list[Outcome]
    release_ns: int  # when the barrier opened, or the open loop's first arrival was due
    release_spread_s: float  # from then to the last user's first send (open loop: last arrival)
    lost: Counter[str]  # requests that ended with neither a value nor a typed error, by cause
    wrong_values: int
    seconds: float
    attempt_times_ns: list[int] = field(default_factory=list)  # every attempt towards the cache
    connected_channels: int = 0  # channels READY when the barrier opened
    connections: int = 0  # channels opened, each its own connection
    connect_start_ns: int = 0  # when the channels were created
    # (time, channel index, connectivity state name) for every channel state change
    channel_events: list[tuple[int, int, str]] = field(default_factory=list)
    open_loop: OpenLoopStats | None = None
    first_errors: dict[str, str] = field(default_factory=dict)  # code -> its first message
    retry_times_ns: list[int] = field(default_factory=list)  # every attempt after a request's first
    # A call of the user's method: whether replies were checked against expectations (None: the
    # cache's Get, whose values are always checked).
    values_checked: bool | None = None
    first_send_ns: int = 0  # the first user's first send (open loop: the first arrival sent)

    def by_code(self) -> dict[str, dict[str, Any]]:
        """Requests by how they ended (OK or the error's code), each with its latencies."""
        latencies: dict[str, list[float]] = {}
        for o in self.outcomes:
            latencies.setdefault(o.code or "OK", []).append(o.latency_s)
        found = {}
        for code, values in sorted(latencies.items()):
            values.sort()
            found[code] = {
                "count": len(values),
                "latency_s": {
                    "p50": quantile(values, 0.50),
                    "p90": quantile(values, 0.90),
                    "p99": quantile(values, 0.99),
                    "max": values[-1],
                },
            }
        return found

    def summary(self) -> dict[str, Any]:
        ok = [o for o in self.outcomes if o.code is None]
        latencies = sorted(o.latency_s for o in self.outcomes)
        checked = (
            {}
            if self.values_checked is None
            else {"values": "checked" if self.values_checked else "unchecked"}
        )
        return {
            "sent": len(self.outcomes) + self.lost.total(),
            "ok": len(ok),
            "errors": dict(Counter(o.code for o in self.outcomes if o.code is not None)),
            "error_messages": dict(self.first_errors),
            "lost": self.lost.total(),
            "wrong_values": self.wrong_values,
            "sources": dict(Counter(o.source for o in ok if o.source is not None)),
            "latency_s": {
                "p50": quantile(latencies, 0.50),
                "p99": quantile(latencies, 0.99),
                "max": latencies[-1] if latencies else 0.0,
            },
            "attempts": sum(o.attempts for o in self.outcomes),
            "codes": self.by_code(),
            **checked,
            "release_spread_s": self.release_spread_s,
            "connected_channels": self.connected_channels,
            **self.connection_summary(),
            "seconds": self.seconds,
            **(self.open_loop.summary() if self.open_loop is not None else {}),
        }

    def connection_summary(self) -> dict[str, Any]:
        """Connections, from each channel's state changes: connect attempts and time from the
        channels' creation to each one's first READY. An attempt is a turn to CONNECTING, or to
        READY or TRANSIENT_FAILURE (reached only through CONNECTING) from another state: the
        watch reads a state after a change, and a connect can end before it reads CONNECTING.
        Attempts quicker than the watch altogether (TRANSIENT_FAILURE -> CONNECTING ->
        TRANSIENT_FAILURE between two reads) are missed."""
        attempts: Counter[int] = Counter()
        ready_ns: dict[int, int] = {}
        last: dict[int, str] = {}
        for at_ns, channel, state in sorted(self.channel_events):
            if state == "CONNECTING" or (
                state in ("READY", "TRANSIENT_FAILURE") and last.get(channel) != "CONNECTING"
            ):
                attempts[channel] += 1
            if state == "READY":
                ready_ns.setdefault(channel, at_ns)
            last[channel] = state
        to_ready = sorted((at_ns - self.connect_start_ns) / 1e9 for at_ns in ready_ns.values())
        return {
            "connections": self.connections,
            "connect_attempts": {
                "total": attempts.total(),
                "max_per_connection": max(attempts.values(), default=0),
            },
            "time_to_ready_s": {
                "p50": quantile(to_ready, 0.50) if to_ready else None,
                "max": to_ready[-1] if to_ready else None,
            },
            # None while a connection has never been READY
            "time_to_all_ready_s": (
                to_ready[-1] if to_ready and len(to_ready) == self.connections else None
            ),
        }


class KeyChooser:
    """Draws keys `<prefix>0 .. <prefix>K-1`: one hot key, uniform, zipf(s) by rank, or
    round-robin (draw i gets key i mod K, so K users need every key exactly once); or unique
    (draw i gets `<prefix>i` whatever K: no key is asked twice in a run, so with a prefix not used
    before every request is a miss)."""

    def __init__(self, config: HerdConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self._draws = itertools.count(config.first_draw)
        self._cumulative: list[float] = []
        if config.distribution == "zipf":
            weights = (1.0 / (rank**config.zipf_s) for rank in range(1, config.keys + 1))
            self._cumulative = list(itertools.accumulate(weights))

    def __call__(self) -> str:
        c = self.config
        draw = next(self._draws)
        if c.distribution == "unique":
            index = draw
        elif c.distribution == "hot" or c.keys == 1:
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


# The results a herd request ends with that are exported at 0 from the start (any other gRPC
# code is counted when it happens).
HERD_RESULTS = ("ok", "unavailable", "resource_exhausted", "deadline_exceeded", "lost")


class HerdMetrics:
    """The herd's own view, for Prometheus: requests by result (ok or the gRPC code)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.guards = GuardSet(())  # the running herd's, once it starts
        GuardCollector(lambda: self.guards, registry, "herd")
        self.requests = prometheus_client.Counter(
            HERD_REQUESTS,
            "Herd requests finished, by result (ok, a gRPC code name, or lost).",
            ["result"],
            registry=registry,
        )
        for result in HERD_RESULTS:
            self.requests.labels(result)
        self.attempts = prometheus_client.Counter(
            HERD_ATTEMPTS, "Attempts made by herd users.", registry=registry
        )
        self.latency = Histogram(
            HERD_REQUEST_LATENCY,
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
    """Optional observers: progress as requests finish (skipped arrivals count as done), the
    barrier's opening (open loop: its start), metrics; and the burst's `gate`, awaited with the
    number of READY channels once every user waits at the barrier, which opens when it returns
    (how a parent releases several herd processes at one instant); `on_outcome`, each request's
    outcome as it is filed (how a Locust worker reports every request)."""

    on_progress: ProgressFn | None = None
    on_release: Callable[[], None] | None = None
    metrics: HerdMetrics | None = None
    gate: Callable[[int], Awaitable[None]] | None = None
    on_outcome: Callable[[Outcome], None] | None = None


def replicas_target(addresses: list[str]) -> str:
    """One gRPC target for the cache's replicas: the address itself for one, else an `ipv4:`
    list that the herd's channels balance with `round_robin`."""
    return addresses[0] if len(addresses) == 1 else "ipv4:" + ",".join(addresses)


def balanced(target: str) -> bool:
    """Whether the herd's channels balance `target`'s addresses with `round_robin`: an `ipv4:`
    list of replicas, or a `dns:` name, which may resolve to several (a Kubernetes headless
    Service names every ready pod)."""
    return "," in target or target.startswith("dns:")


async def run_herd(config: HerdConfig, hooks: HerdHooks | None = None) -> HerdResult:
    """Runs the herd (the burst, or `config.open_loop`) to completion and returns every request's
    outcome. The channels get the policy's gRPC service config when it is grpc-native."""
    problems = config.problems()
    if problems:
        raise ValueError("; ".join(problems))
    rng = random.Random(config.seed)
    choose = KeyChooser(config, rng)
    policy = config.policy.with_seed(rng.randrange(2**32) if config.seed is not None else None)
    replicas = balanced(config.target)
    options = channel_options(
        local_pool=True,
        reconnect=config.reconnect,
        service_config=policy.grpc_service_config(),
        keepalive=config.keepalive,
        health_check=replicas and config.health_check,
    )
    if replicas:
        options.append(ROUND_ROBIN)
        if config.tls_ca is not None and "," in config.target:
            # gRPC checks the certificate against the target's authority, which for an `ipv4:`
            # list is the whole list and names no host; the replicas share their first's host.
            first = config.target.removeprefix("ipv4:").split(",")[0]
            options.append(("grpc.ssl_target_name_override", first.rsplit(":", 1)[0]))
    guards = parse_guard_set(config.guards, rng=random.Random(config.seed))
    cures = None
    if config.client == "cures":
        cures = Cures(policy, guards, on_send=_sent_attempt)
        options = cures.options(options)
    interceptors = None if cures is None else cures.interceptors()
    connect_start_ns = time.time_ns()
    channels = [
        aio_channel(config.target, options, config.tls_ca, interceptors)
        for _ in range(config.channels)
    ]
    events: list[tuple[int, int, str]] = []
    watchers = [
        asyncio.create_task(_watch(channel, index, events, config.stay_connected))
        for index, channel in enumerate(channels)
    ]
    try:
        connected = await _connect(channels)
        call = config.call
        stubs = [
            cache_pb2_grpc.CacheStub(ch) if call is None else call.callable(ch) for ch in channels
        ]
        run = _Run(config, stubs, choose, policy, guards, cures, hooks or HerdHooks())
        result = await (
            run.burst(connected) if config.open_loop is None else run.open(config.open_loop)
        )
        result.channel_events = events
        result.connected_channels = connected
        result.connections = len(channels)
        result.connect_start_ns = connect_start_ns
        return result
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await asyncio.gather(*(ch.close(grace=None) for ch in channels))


async def _watch(
    channel: grpc.aio.Channel, index: int, events: list[tuple[int, int, str]], stay: bool
) -> None:
    """Records every connectivity change of `channel` until cancelled (when the herd ends);
    with `stay`, asks an IDLE channel to connect at once."""
    state = channel.get_state(try_to_connect=False)
    events.append((time.time_ns(), index, state.name))
    while True:
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=False)
        events.append((time.time_ns(), index, state.name))
        if stay and state == grpc.ChannelConnectivity.IDLE:
            channel.get_state(try_to_connect=True)


def connect_timeout_s(connections: int) -> float:
    """How long a herd waits for `connections` channels to be READY before releasing anyway."""
    return CONNECT_TIMEOUT_S + connections * CONNECT_S_PER_CONNECTION


async def _connect(channels: list[grpc.aio.Channel]) -> int:
    """Waits (bounded) for every channel to be READY; returns how many are."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(ch.channel_ready() for ch in channels)),
            connect_timeout_s(len(channels)),
        )
    return sum(
        ch.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY for ch in channels
    )


class _Run:
    """One herd run: its requests and what they saw; `burst()` or `open()` drives them."""

    def __init__(
        self,
        config: HerdConfig,
        stubs: list[Any],  # the cache's stubs, or the call's multi-callables
        choose: KeyChooser,
        policy: RetryPolicy,
        guards: GuardSet,
        cures: Cures | None,  # set: the channels' interceptors retry, not this loop
        hooks: HerdHooks,
    ) -> None:
        self.config = config
        self.stubs = stubs
        self.choose = choose
        self.policy = policy
        self.hooks = hooks
        self.guards = guards
        self.cures = cures
        if hooks.metrics is not None:
            hooks.metrics.guards = self.guards
        self.total = (
            config.users * config.requests_per_user
            if config.open_loop is None
            else config.open_loop.arrivals
        )
        self.outcomes: list[Outcome] = []
        self.attempt_times: list[int] = []
        self.retry_times: list[int] = []
        self.sequence = itertools.count()
        self.uuids = random.Random(config.seed)
        self.first_sends: list[int] = []
        self.wrong = 0
        self.first_errors: dict[str, str] = {}
        self.lost: Counter[str] = Counter()
        self.skipped = 0
        self.user_keys: list[list[str]] = []
        self.waiting = 0
        self.all_waiting = asyncio.Event()
        self.release = asyncio.Event()

    def _result(self, users: int, release_ns: int, started: float) -> HerdResult:
        return HerdResult(
            users=users,
            outcomes=self.outcomes,
            release_ns=release_ns,
            release_spread_s=(max(self.first_sends) - release_ns) / 1e9 if self.first_sends else 0,
            lost=self.lost,
            wrong_values=self.wrong,
            seconds=time.monotonic() - started,
            attempt_times_ns=self.attempt_times,
            first_errors=self.first_errors,
            retry_times_ns=self.retry_times,
            values_checked=None if self.config.call is None else self.config.call.checked,
            first_send_ns=min(self.first_sends, default=0),
        )

    async def burst(self, connected: int) -> HerdResult:
        self.user_keys = [
            [self.choose() for _ in range(self.config.requests_per_user)]
            for _ in range(self.config.users)
        ]
        tasks = [asyncio.create_task(self.user(u)) for u in range(self.config.users)]
        await self.all_waiting.wait()
        if self.hooks.gate is not None:
            await self.hooks.gate(connected)
        release_ns = time.time_ns()
        started = time.monotonic()
        self.release.set()
        if self.hooks.on_release is not None:
            self.hooks.on_release()
        await asyncio.gather(*tasks)
        return self._result(self.config.users, release_ns, started)

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
            await self.one(stub, user, key)

    async def open(self, plan: OpenLoop) -> HerdResult:
        """Sends arrival i at t0 + i / rate (i < rate x duration) unless `max_in_flight` requests
        are in flight, then waits for every request sent. Each arrival draws its key, sent or not,
        so a seed gives arrival i the same key whatever was skipped."""
        loop = asyncio.get_running_loop()
        interval_s = 1.0 / plan.rate_per_s
        tasks: set[asyncio.Task[None]] = set()
        in_flight = 0

        def done(task: asyncio.Task[None]) -> None:
            nonlocal in_flight
            in_flight -= 1
            tasks.discard(task)

        stats = OpenLoopStats(plan, start_ns=time.time_ns())
        t0 = loop.time()
        started = time.monotonic()
        if self.hooks.on_release is not None:
            self.hooks.on_release()
        for arrival in range(plan.arrivals):
            due = t0 + arrival * interval_s
            # A yield even when late: requests already sent must progress while the loop catches up.
            await asyncio.sleep(max(0.0, due - loop.time()))
            lag_s = loop.time() - due
            stats.max_lag_s = max(stats.max_lag_s, lag_s)
            if lag_s > interval_s:
                stats.late += 1
            key = self.choose()
            if in_flight >= plan.max_in_flight:
                stats.skipped_ns.append(time.time_ns())
                self.skipped += 1
                self._progress()
                continue
            in_flight += 1
            stats.peak_in_flight = max(stats.peak_in_flight, in_flight)
            self.first_sends.append(time.time_ns())
            task = asyncio.create_task(
                self.one(self.stubs[arrival % len(self.stubs)], arrival, key)
            )
            tasks.add(task)
            task.add_done_callback(done)
        await asyncio.gather(*tasks)
        result = self._result(0, stats.start_ns, started)
        result.open_loop = stats
        return result

    async def one(self, stub: Any, user: int, key: str) -> None:
        """One request, filed as an outcome, or as lost if it outlives deadline + margin."""
        try:
            outcome = await asyncio.wait_for(
                self.request(stub, user, key)
                if self.config.call is None
                else self.call(self.config.call, stub, user, key),
                self.policy.max_total_s + LOST_MARGIN_S,
            )
        except Exception as exc:
            self.lost[type(exc).__name__] += 1
            if self.hooks.metrics is not None:
                self.hooks.metrics.requests.labels("lost").inc()
        else:
            self.outcomes.append(outcome)
            if self.hooks.metrics is not None:
                self.hooks.metrics.observe(outcome)
            if self.hooks.on_outcome is not None:
                self.hooks.on_outcome(outcome)
        self._progress()

    def _progress(self) -> None:
        if self.hooks.on_progress is not None:
            self.hooks.on_progress(
                len(self.outcomes) + self.lost.total() + self.skipped, self.total
            )

    def _failed(
        self, user: int, key: str, error: BaseException, attempts: int, sent_ns: int
    ) -> Outcome:
        """The outcome of a request that ended with `error`; the first message of each code is
        kept, so a report can say why requests failed."""
        code = _code(error)
        self.first_errors.setdefault(code, _message(error))
        return Outcome(user, key, None, code, attempts, sent_ns, time.time_ns())

    def _attempted(self, attempts: int) -> None:
        now = time.time_ns()
        self.attempt_times.append(now)
        if attempts > 1:
            self.retry_times.append(now)

    async def retried(self, send: Callable[[float], Awaitable[T]], attempts: _Attempts) -> T:
        """`send(timeout_s)` (one attempt) retried under the herd's policy and guards: here, or
        in the channel's `Cures` interceptors (one call, its deadline the policy's total budget);
        every attempt sent counts in `attempts` and the run's record."""
        if self.cures is not None:
            _ATTEMPTS.set(attempts)
            return await send(self.policy.max_total_s)

        async def attempt(timeout_s: float) -> T:
            attempts.sent_one()
            return await send(timeout_s)

        return await self.policy.call(attempt, guards=self.guards)

    async def call(self, call: Call, method: Any, user: int, key: str) -> Outcome:
        """One request to the user's method: its template filled, replies checked if asked."""
        attempts = _Attempts(self)
        sent_ns = time.time_ns()
        values = call.values(key, user, next(self.sequence), self.uuids)
        request = call.request(values)
        try:
            replies = await self.retried(lambda t: call.invoke(method, request, t), attempts)
        except CallFailed as exc:
            return self._failed(user, key, exc.cause, attempts.sent, sent_ns)
        except RetryExhausted as exc:
            return self._failed(user, key, exc.last, attempts.sent, sent_ns)
        except grpc.aio.AioRpcError as exc:
            return self._failed(user, key, exc, attempts.sent, sent_ns)
        if not call.matches(replies, values):
            self.wrong += 1
        return Outcome(user, key, None, None, attempts.sent, sent_ns, time.time_ns())

    async def request(self, stub: cache_pb2_grpc.CacheAsyncStub, user: int, key: str) -> Outcome:
        attempts = _Attempts(self)
        sent_ns = time.time_ns()
        request = cache_pb2.CacheGetRequest(key=key)

        async def send(timeout_s: float) -> cache_pb2.CacheGetResponse:
            reply: cache_pb2.CacheGetResponse = await stub.Get(request, timeout=timeout_s)
            return reply

        try:
            reply = await self.retried(send, attempts)
        except CallFailed as exc:
            return self._failed(user, key, exc.cause, attempts.sent, sent_ns)
        except RetryExhausted as exc:
            return self._failed(user, key, exc.last, attempts.sent, sent_ns)
        except grpc.aio.AioRpcError as exc:
            return self._failed(user, key, exc, attempts.sent, sent_ns)
        if reply.key != key or reply.value != value_for(key, reply.version):
            self.wrong += 1
        source = SOURCE_NAMES.get(reply.source, "UNKNOWN")
        stale_age_s = reply.stale_age_s if reply.source == cache_pb2.STALE else None
        return Outcome(user, key, source, None, attempts.sent, sent_ns, time.time_ns(), stale_age_s)


@dataclass
class _Attempts:
    """One request's attempts sent, recorded in its herd's run as they go."""

    run: _Run
    sent: int = 0

    def sent_one(self) -> None:
        self.sent += 1
        self.run._attempted(self.sent)


# The request a `Cures` attempt belongs to: set in the request's task before its call, and seen by
# the interceptors' task, which grpc.aio creates from it (a task copies its creator's context).
_ATTEMPTS: contextvars.ContextVar[_Attempts] = contextvars.ContextVar("herd_attempts")


def _sent_attempt(method: str) -> None:
    """`Cures.on_send`: one more attempt of the current request."""
    _ATTEMPTS.get().sent_one()


def error_causes(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Why requests failed, from a herd's `summary()`: per code, how many and the first
    message."""
    return {
        code: {"count": count, "first": summary["error_messages"].get(code, "")}
        for code, count in sorted(summary["errors"].items())
    }


def _message(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return str(error.details() or "")
    return str(error)


def _code(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return str(error.code().name)
    if isinstance(error, GuardRejected):
        return f"REFUSED_{error.guard.upper()}"  # refused by the herd's own guard, never sent
    return type(error).__name__
