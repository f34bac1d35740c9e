"""Soak: a herd keeps running while the DB and the cache are killed, paused and restored in turn,
cycle after cycle, on a fresh local stack. Nothing may be lost, nothing wrong or stale served,
nothing left in flight, and the cache must not leak memory or file descriptors.

One cycle is four faults in turn, each followed by recovery (a never-seen key served through the
cache from the DB) and by at least `users` more herd requests:

1. `db kill`: SIGKILL the DB, `outage_s`, restore it serving the next data version;
2. `db pause`: SIGSTOP the DB for `outage_s`, then SIGCONT;
3. `cache pause`: the same for the cache;
4. `cache kill`: SIGKILL the cache, `outage_s`, restore it (only in the first `cache_kill_cycles`
   cycles, see below).

The herd runs in rounds (each `users` x `requests_per_user` with `think_s` between a user's
requests, a jittered retry policy, a deadline per request) one after another until the last cycle
is done; every round ends on its own, so the soak's traffic is bounded.

**Cache memory and file descriptors.** A killed and restored cache is a new process, so comparing
two incarnations says nothing about leaks. The figures come from one long-lived cache process:
the cache is also killed in the first `cache_kill_cycles` cycles (half of them by default) and
never again, so the last cache process lives through every later cycle's DB kill, DB pause and
cache pause. Its first `warmup_cycles` cycles are its warm-up (by default 5, or half its cycles
if it has fewer than 10: its RSS climbs for about 5 cycles, then holds). `rss_before`/`fds_before`
are read at the end of the warm-up, `rss_after`/`fds_after` at the end of the last cycle, both
at the same quiescent point: the herd between rounds, and the cache holding exactly the soak's
own two connections (probe and admin), every other socket closed. `rss_by_cycle` is that
process's RSS at the end of each of its cycles (herd running), to show the trend.

**Client-visible correctness.** Every restored DB serves a new data version (values are a pure
function of key and version), so a value older than the TTL is observable: a probe reads the
herd's keys throughout and counts `stale_values`, values whose version is older than the
newest DB's although the request was sent more than a TTL after that DB came up (or, for a key
never read before, after it came up at all). `wrong_values` counts values that are not their
key's value at their version, from the herd and from the probe.

`lost` is every request that ended with neither a value nor a typed error (always 0);
`inflight_after` the cache's coalescer entries once the herd has stopped and the cache's own
fetch budget has had time to run out (0: nothing leaks in flight); `db_dropped` the DB's count of
work whose caller had gone, summed over its incarnations (each read just before it was killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import grpc
import psutil

from chaos.admin import Admin
from chaos.herd import HerdConfig, HerdHooks, HerdResult, ProgressFactory, ProgressFn, run_herd
from chaos.scenarios.common import in_thread, scenario_stack
from chaos.stack import LocalStack, StackInfo
from herdlab.grpcutil import Reconnect, channel_options
from herdlab.retry import RetryPolicy
from herdlab.values import value_for
from protos import cache_pb2, cache_pb2_grpc

SCENARIO = "soak"
STEPS = ("db kill", "db pause", "cache pause", "cache kill")
KEY_PREFIX = "soak-key-"  # the herd's keys; the probe's never-seen keys are `soak-fresh-N`
# The DB's data version comes from this variable when its command line does not name one; the
# stack restarts the DB with its original command line, which never does.
FIRST_VERSION = 1
RECOVERY_TIMEOUT_S = 60.0  # a fault not recovered from by then fails the soak
SETTLE_TIMEOUT_S = 15.0  # waiting for the cache's connections to settle before reading its fds
POLL_S = 0.02
PROBE_THINK_S = 0.01
OWN_CONNECTIONS = 2  # the soak's probe and admin channels, each its own connection to the cache
MAX_ROUNDS = 1_000_000
MAX_PROBES = 100_000_000


@dataclass(frozen=True)
class SoakConfig:
    """The soak's settings. The defaults keep the herd modest (30 users, each a request about
    every 60 ms, over 64 keys), so 50 cycles take about three minutes on two shared cores, and
    the cache's TTL short (1 s), so values expire, and are fetched at a new version after a DB
    restore, many times in every cycle."""

    cycles: int = 10
    users: int = 30
    requests_per_user: int = 20
    think_s: float = 0.05
    keys: int = 64
    channels: int = 4
    deadline_s: float = 3.0  # each herd request's budget, retries included
    outage_s: float = 0.5  # how long each kill or pause lasts before the restore or resume
    ttl_s: float = 1.0  # the cache's TTL
    cache_kill_cycles: int | None = None  # cycles that also kill the cache [default: cycles // 2]
    warmup_cycles: int | None = None  # of the long-lived cache [default: min(5, half its cycles)]
    seed: int | None = 1

    @property
    def cache_kills(self) -> int:
        return self.cycles // 2 if self.cache_kill_cycles is None else self.cache_kill_cycles

    @property
    def warmup(self) -> int:
        if self.warmup_cycles is not None:
            return self.warmup_cycles
        return max(1, min(5, (self.cycles - self.cache_kills) // 2))

    def problems(self) -> list[str]:
        found = []
        if not 1 <= self.cycles <= 10_000:
            found.append(f"cycles must be in 1..10000, got {self.cycles}")
        if not 0 <= self.cache_kills < max(self.cycles, 1):
            found.append(
                f"cache kill cycles must be in 0..cycles-1 (the last cycle keeps its cache), "
                f"got {self.cache_kills}"
            )
        if not 1 <= self.warmup <= self.cycles - self.cache_kills:
            found.append(
                f"warm-up cycles must be in 1..(cycles - cache kill cycles), got {self.warmup}"
            )
        if not 1 <= self.users <= 10_000:
            found.append(f"users must be in 1..10000, got {self.users}")
        if not 1 <= self.requests_per_user <= 10_000:
            found.append(f"requests per user must be in 1..10000, got {self.requests_per_user}")
        if not 0 <= self.think_s <= 10:
            found.append(f"think time must be in [0, 10s], got {self.think_s:g}s")
        if not 1 <= self.keys <= 100_000:
            found.append(f"keys must be in 1..100000, got {self.keys}")
        if not 1 <= self.channels <= min(self.users, 1024):
            found.append(f"channels must be in 1..min(users, 1024), got {self.channels}")
        if not 0.1 <= self.deadline_s <= 60:
            found.append(f"deadline must be in [0.1s, 60s], got {self.deadline_s:g}s")
        if not 0 < self.outage_s <= 60:
            found.append(f"outage must be in (0, 60s], got {self.outage_s:g}s")
        if not 0.1 <= self.ttl_s <= 3600:
            found.append(f"ttl must be in [0.1s, 1h], got {self.ttl_s:g}s")
        return found

    def herd(self, target: str) -> HerdConfig:
        return HerdConfig(
            target=target,
            users=self.users,
            keys=self.keys,
            distribution="uniform",
            key_prefix=KEY_PREFIX,
            requests_per_user=self.requests_per_user,
            think_s=self.think_s,
            channels=self.channels,
            policy=RetryPolicy(
                name="full",
                base_s=0.05,
                cap_s=0.5,
                max_attempts=4,
                max_total_s=self.deadline_s,
                attempt_timeout_s=min(1.0, self.deadline_s),
            ),
            reconnect=Reconnect(
                initial_backoff_ms=100, max_backoff_ms=1000, min_connect_timeout_ms=1000
            ),
            seed=self.seed,
        )

    def db_args(self) -> list[str]:
        seed = [] if self.seed is None else ["--seed", str(self.seed)]
        return [
            "--latency",
            "5ms",
            "--spread",
            "5ms",
            "--concurrency",
            "16",
            "--queue",
            "256",
            *seed,
        ]

    def cache_args(self) -> list[str]:
        seed = [] if self.seed is None else ["--seed", str(self.seed)]
        return [
            "--ttl",
            f"{self.ttl_s * 1000:g}ms",
            "--policy",
            "full",
            "--retry-base",
            "50ms",
            "--retry-cap",
            "500ms",
            "--retry-attempts",
            "4",
            "--retry-total",
            f"{self.fetch_budget_s * 1000:g}ms",
            "--attempt-timeout",
            "500ms",
            "--db-reconnect-initial",
            "100ms",
            "--db-reconnect-max",
            "1s",
            *seed,
        ]

    @property
    def fetch_budget_s(self) -> float:
        """The cache's time budget for one fetch: a fetch outlives its callers by at most this."""
        return min(2.0, self.deadline_s)


class Freshness:
    """Decides whether a value was served too old: the versions the DB has served, from when.

    A value read from the store is at most a TTL old, so for a request sent more than `ttl_s`
    after a DB of version v came up, any version below v is stale. A key never read before has no
    stored value: its first read must come from the DB that was up when it was sent.
    """

    def __init__(self, ttl_s: float, first_version: int = FIRST_VERSION) -> None:
        self.ttl_s = ttl_s
        self.versions: list[tuple[float, int]] = [(float("-inf"), first_version)]

    @property
    def current(self) -> int:
        return self.versions[-1][1]

    def serving(self, version: int, since: float) -> None:
        """A DB of `version` has been up since `since` (monotonic seconds)."""
        self.versions.append((since, version))

    def floor(self, sent_at: float, never_read: bool = False) -> int:
        """The oldest version a reply to a request sent at `sent_at` may carry."""
        age = 0.0 if never_read else self.ttl_s
        return max(v for since, v in self.versions if since + age <= sent_at)

    def is_stale(self, version: int, sent_at: float, never_read: bool = False) -> bool:
        return version < self.floor(sent_at, never_read)


class _Probe:
    """One client of the cache, on its own connection, checking every value it gets: the herd's
    keys read in turn throughout the soak, and never-seen keys to tell when a fault is over."""

    def __init__(self, target: str, keys: int, freshness: Freshness, deadline_s: float) -> None:
        self._channel = grpc.aio.insecure_channel(target, options=channel_options(local_pool=True))
        self._stub = cache_pb2_grpc.CacheStub(self._channel)
        self.keys = keys
        self.freshness = freshness
        self.deadline_s = deadline_s
        self.sent = 0
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.wrong = 0
        self.stale = 0
        self._fresh = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def _get(self, key: str, never_read: bool) -> bool:
        """One checked read; True if it returned a value."""
        self.sent += 1
        sent_at = time.monotonic()
        try:
            reply = await self._stub.Get(
                cache_pb2.CacheGetRequest(key=key), timeout=self.deadline_s
            )
        except grpc.aio.AioRpcError as exc:
            self.errors[exc.code().name] += 1
            return False
        self.ok += 1
        if reply.key != key or reply.value != value_for(key, reply.version):
            self.wrong += 1
        elif self.freshness.is_stale(reply.version, sent_at, never_read):
            self.stale += 1
        return True

    async def run(self) -> None:
        """Reads the herd's keys in turn until closed."""
        for n in range(MAX_PROBES):
            if self._stop.is_set():
                return
            await self._get(f"{KEY_PREFIX}{n % self.keys}", never_read=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), PROBE_THINK_S)

    async def until_served(self, what: str) -> None:
        """Returns once a never-seen key is served through the cache from the DB."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECOVERY_TIMEOUT_S
        while loop.time() < deadline:
            self._fresh += 1
            if await self._get(f"soak-fresh-{self._fresh}", never_read=True):
                return
            await asyncio.sleep(POLL_S)
        raise RuntimeError(f"soak: not recovered within {RECOVERY_TIMEOUT_S:g}s after {what}")

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "errors": dict(self.errors),
            "wrong_values": self.wrong,
            "stale_values": self.stale,
        }


class _Traffic:
    """The herd, round after round, until stopped; can be held between rounds."""

    def __init__(self, config: HerdConfig) -> None:
        self.config = config
        self.rounds = 0
        self.done = 0  # requests finished, over all rounds
        self._done_before_round = 0
        self.sent = 0
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()
        self.wrong = 0
        self._go = asyncio.Event()
        self._go.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._targets: list[tuple[int, asyncio.Event]] = []

    def _progress(self, done_in_round: int, _total: int) -> None:
        self._advance(self._done_before_round + done_in_round)

    def _advance(self, done: int) -> None:
        self.done = done
        for target, reached in self._targets:
            if done >= target:
                reached.set()

    def _add(self, result: HerdResult) -> None:
        summary = result.summary()
        self.sent += summary["sent"]
        self.ok += summary["ok"]
        self.errors.update(summary["errors"])
        self.lost.update(result.lost)
        self.wrong += result.wrong_values
        self._done_before_round += summary["sent"]
        self._advance(self._done_before_round)

    async def run(self) -> None:
        for number in range(MAX_ROUNDS):
            # Not just one wait: `hold` may clear the event again after it woke this loop.
            while not self._go.is_set():
                await self._go.wait()
            if self._stopping:
                return
            self._idle.clear()
            try:
                seed = None if self.config.seed is None else self.config.seed + number
                config = replace(self.config, seed=seed)
                self._add(await run_herd(config, HerdHooks(on_progress=self._progress)))
                self.rounds += 1
            finally:
                self._idle.set()

    async def hold(self) -> None:
        """Lets the current round finish and starts no other until `release`."""
        self._go.clear()
        await self._idle.wait()

    def release(self) -> None:
        self._go.set()

    async def stop(self, task: asyncio.Task[None]) -> None:
        self._stopping = True
        self._go.set()
        await task

    async def until_more(self, requests: int, what: str) -> None:
        """Returns once `requests` more herd requests have finished."""
        reached = asyncio.Event()
        entry = (self.done + requests, reached)
        self._targets.append(entry)
        try:
            await asyncio.wait_for(reached.wait(), RECOVERY_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError(
                f"soak: the herd finished fewer than {requests} requests within "
                f"{RECOVERY_TIMEOUT_S:g}s after {what}"
            ) from None
        finally:
            self._targets.remove(entry)


def _cache_connections(pid: int, port: int) -> tuple[int, int]:
    """(established, other) TCP sockets the cache holds on its gRPC port, listener excluded."""
    established = other = 0
    for conn in psutil.Process(pid).net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status != psutil.CONN_LISTEN:
            if conn.status == psutil.CONN_ESTABLISHED:
                established += 1
            else:
                other += 1
    return established, other


@dataclass
class _CacheFigures:
    """The long-lived cache's resources: at the end of its warm-up and of the last cycle."""

    from_cycle: int
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    rss_by_cycle: list[int] = field(default_factory=list)


class _Soak:
    """One soak over a stack that is up: the faults, the measurements, the document."""

    def __init__(
        self,
        config: SoakConfig,
        stack: LocalStack,
        info: StackInfo,
        admin: Admin,
        emit: Callable[[str], None],
    ) -> None:
        self.config = config
        self.stack = stack
        self.admin = admin
        self.emit = emit
        cache = info.services["cache"].grpc
        self.cache_port = int(cache.rsplit(":", 1)[1])
        self.freshness = Freshness(config.ttl_s, FIRST_VERSION)
        self.probe = _Probe(cache, config.keys, self.freshness, config.deadline_s)
        self.traffic = _Traffic(config.herd(cache))
        self.db_dropped = 0
        self.db_restarts = 0
        self.cache_restarts = 0
        self.recovery: dict[str, list[float]] = {step: [] for step in STEPS}

    async def run(self, progress: ProgressFn | None) -> dict[str, Any]:
        config, probe, traffic = self.config, self.probe, self.traffic
        started = time.monotonic()
        probing = asyncio.create_task(probe.run())
        herding = asyncio.create_task(traffic.run())
        try:
            await probe.until_served("start")
            await traffic.until_more(config.users, "start")
            figures = await self._cycles(progress)
            await traffic.stop(herding)
            inflight_after = await self._inflight_after()
            self.db_dropped += (await self.admin.db_state()).dropped
        finally:
            probe.stop()
            herding.cancel()
            await asyncio.gather(probing, herding, return_exceptions=True)
            await probe.close()
        return self._document(figures, inflight_after, time.monotonic() - started)

    async def _cycles(self, progress: ProgressFn | None) -> _CacheFigures:
        config = self.config
        figures = _CacheFigures(from_cycle=config.cache_kills + config.warmup)
        for cycle in range(1, config.cycles + 1):
            steps = STEPS if cycle <= config.cache_kills else STEPS[:-1]
            took = {}
            for step in steps:
                took[step] = await self._fault(step, f"cycle {cycle}'s {step}")
            if cycle > config.cache_kills:  # the long-lived cache's cycles
                figures.rss_by_cycle.append(psutil.Process(self._cache_pid()).memory_info().rss)
            if cycle == figures.from_cycle:
                figures.before = await self._cache_resources()
            if cycle == config.cycles:
                figures.after = (
                    figures.before if cycle == figures.from_cycle else await self._cache_resources()
                )
            t = self.traffic
            self.emit(
                f"cycle {cycle}/{config.cycles}: "
                + ", ".join(f"{step} {s:.2f}s" for step, s in took.items())
                + f" (recovery); herd {t.sent:,} sent, {t.ok:,} ok, {t.lost.total()} lost"
            )
            if progress is not None:
                progress(cycle, config.cycles)
        return figures

    async def _fault(self, step: str, what: str) -> float:
        """One fault, then recovery; returns seconds from the service's return to recovery."""
        service, action = step.split()
        if action == "kill":
            if service == "db":
                self.db_dropped += (await self.admin.db_state()).dropped
            await in_thread(self.stack.kill, service)
            await asyncio.sleep(self.config.outage_s)
            if service == "db":
                version = self.freshness.current + 1
                await in_thread(self.stack.restore, "db", ["--data-version", str(version)])
                self.freshness.serving(version, time.monotonic())
                self.db_restarts += 1
            else:
                await in_thread(self.stack.restore, "cache")
                self.cache_restarts += 1
        else:
            await in_thread(self.stack.pause, service)
            await asyncio.sleep(self.config.outage_s)
            await in_thread(self.stack.resume, service)
        back = time.monotonic()
        await self.probe.until_served(what)
        recovered = time.monotonic() - back
        self.recovery[step].append(recovered)
        await self.traffic.until_more(self.config.users, what)
        return recovered

    async def _cache_resources(self) -> dict[str, Any]:
        """The cache's RSS and open fds at a quiescent point: the herd held between rounds, the
        admin channel connected, and the cache holding only the soak's own connections."""
        await self.traffic.hold()
        try:
            # A closed channel's connection stays open while calls that failed on it are still
            # referenced, and failed calls sit in reference cycles (exception, traceback, retry
            # state) until the cycle collector runs: collect now, or the herd's last round can
            # hold its connections to the cache for many seconds after it has ended.
            gc.collect()
            await self.admin.cache_state()
            pid = self._cache_pid()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SETTLE_TIMEOUT_S
            while True:
                settled = _cache_connections(pid, self.cache_port) == (OWN_CONNECTIONS, 0)
                if settled or loop.time() > deadline:
                    break
                await asyncio.sleep(POLL_S)
            process = psutil.Process(pid)
            return {
                "pid": pid,
                "rss": process.memory_info().rss,
                "fds": process.num_fds(),
                "settled": settled,
            }
        finally:
            self.traffic.release()

    def _cache_pid(self) -> int:
        pid = self.stack.status()["cache"].pid
        if pid is None:
            raise RuntimeError("soak: the cache is not running")
        return pid

    async def _inflight_after(self) -> int:
        """The cache's coalescer entries once the herd has stopped, waiting (at most the cache's
        fetch budget and a margin) for fetches that outlived their callers to end."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.fetch_budget_s + 5.0
        while True:
            in_flight = (await self.admin.cache_state()).in_flight_keys
            if in_flight == 0 or loop.time() > deadline:
                return int(in_flight)
            await asyncio.sleep(POLL_S)

    def _document(
        self, figures: _CacheFigures, inflight_after: int, seconds: float
    ) -> dict[str, Any]:
        t, p = self.traffic, self.probe
        before, after = figures.before, figures.after
        return {
            "scenario": SCENARIO,
            "cycles": self.config.cycles,
            "seconds": round(seconds, 1),
            "sent": t.sent,
            "ok": t.ok,
            "errors": dict(t.errors),
            "lost": t.lost.total(),
            "lost_by_cause": dict(t.lost),
            "wrong_values": t.wrong + p.wrong,
            "stale_values": p.stale,
            "inflight_after": inflight_after,
            "rss_before": before["rss"],
            "rss_after": after["rss"],
            "rss_growth": round(after["rss"] / before["rss"] - 1.0, 4),
            "fds_before": before["fds"],
            "fds_after": after["fds"],
            "cache_measured": {
                "pid": after["pid"],
                "same_process": before["pid"] == after["pid"],
                "connections_settled": before["settled"] and after["settled"],
                "from_end_of_cycle": figures.from_cycle,
                "to_end_of_cycle": self.config.cycles,
                # RSS at the end of every cycle of that process, herd running (the trend)
                "rss_by_cycle": figures.rss_by_cycle,
            },
            "db_dropped": self.db_dropped,
            "db_restarts": self.db_restarts,
            "db_version_last": self.freshness.current,
            "cache_restarts": self.cache_restarts,
            "herd_rounds": t.rounds,
            "probe": p.summary(),
            "recovery_s": {
                step: {"count": len(times), "max": round(max(times), 3)}
                for step, times in self.recovery.items()
                if times
            },
            "config": asdict(self.config),
        }


async def run_soak(
    config: SoakConfig,
    emit: Callable[[str], None],
    progress: ProgressFactory | None = None,
) -> dict[str, Any]:
    """Runs the soak on its own local stack (torn down at the end); returns the JSON document."""
    problems = config.problems()
    if problems:
        raise ValueError("; ".join(problems))
    emit(
        f"Soak: {config.cycles} cycles of {', '.join(STEPS)} (the cache killed in the first "
        f"{config.cache_kills}), each {config.outage_s:g}s; herd of {config.users} users x "
        f"{config.requests_per_user} requests in rounds; cache TTL {config.ttl_s:g}s"
    )
    async with scenario_stack(SCENARIO) as stack:
        info = await in_thread(
            stack.up, [*config.db_args(), "--data-version", str(FIRST_VERSION)], config.cache_args()
        )
        db, cache = info.services["db"].grpc, info.services["cache"].grpc
        async with Admin(db, cache) as admin:
            soak = _Soak(config, stack, info, admin, emit)
            doc = await soak.run(progress(SCENARIO) if progress else None)
    emit(
        f"Soak done: {doc['cycles']} cycles in {doc['seconds']:g}s; {doc['sent']:,} sent, "
        f"{doc['ok']:,} ok, {doc['lost']} lost, {doc['wrong_values']} wrong, "
        f"{doc['stale_values']} stale; in flight after: {doc['inflight_after']}; cache fds "
        f"{doc['fds_before']} -> {doc['fds_after']}, RSS {doc['rss_before'] / 2**20:.1f} -> "
        f"{doc['rss_after'] / 2**20:.1f} MiB"
    )
    return doc
