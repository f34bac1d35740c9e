"""The retry storm: a herd's fetches are in flight when the DB dies; how do the retries come back?

For each retry policy, on a fresh local stack:

1. warm: a round-robin herd of K users fills the cache with K keys (the DB's concurrency is
   raised for this step only, so warming is quick), then every key is expired at once;
2. a round-robin herd of K users asks for the K keys: K cache misses, K fetches to the DB,
   each under the cache's retry policy (coalescing is on, but each key has one user);
3. once the DB has seen every key's first attempt, so that the fetches are in flight and fail
   together, the DB is SIGKILLed (at the latest `KILL_WITHIN` of an attempt's deadline after the
   release, before any queued attempt times out); `outage_s` later it is started again on the
   same address;
4. the herd runs until every request has a value or a typed error (bounded by its deadline).

The DB is deliberately small (`db_concurrency / db_latency_s` queries per second, far below K
per 100 ms) and each attempt has a short deadline, so a synchronised wave cannot be absorbed: the
attempts that wait past their deadline fail together and retry together again. That is the
sustaining effect of a metastable failure, and what jitter breaks up.

Timelines are 100 ms bins from the herd's release (`t0_ns`):

- `db_arrivals`: from the DB's exact record. The killed DB's record is read just before the
  SIGKILL (a SIGKILLed process answers nothing), so arrivals in the few milliseconds between that
  read and the kill are missing; nothing is due to retry then, so they are at most late first
  attempts. The restored DB's record covers everything after the restore.
- `cache_attempts`: from the cache's record of every attempt towards the DB, including the ones
  that failed fast while the DB was down (they never reached it).
- `served`: herd requests answered with a value.

`outage` is [SIGKILL, the restarted DB accepts TCP connections again] (a connect probe polled
every 5 ms: the health check `restore` waits for sees the DB up to ~1 s late); the DB cannot
record an arrival inside it. `recovery_s` runs from the end of the outage to the last key served;
`ideal_recovery_s` is keys / capacity per second. `post_restore_peak_per_100ms` is the largest
bin of the restored DB's arrivals.

The cache reconnects to the DB with a short gRPC connection backoff (`reconnect_*`), so gRPC's
default 1 s..120 s backoff does not hide the retry policy being measured. The herd's users make a
single attempt each with a deadline longer than the cache's whole retry budget: the cache's
policy is the only one retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, ParamSpec, TypeVar

from chaos.admin import Admin
from chaos.herd import HerdConfig, HerdHooks, HerdResult, ProgressFactory, ProgressFn, run_herd
from chaos.scenarios.common import BIN_S, bins, in_thread, scenario_stack, wait_listening
from chaos.stack import READY_TIMEOUT_S, LocalStack
from herdlab.retry import POLICY_NAMES, RetryPolicy
from protos import admin_pb2

P = ParamSpec("P")
T = TypeVar("T")

SCENARIO = "retry-storm"
# The herd's deadline exceeds the cache's retry budget by this much, so users see the cache's
# typed error rather than their own deadline.
HERD_MARGIN_S = 10.0
# The DB is killed once it has seen every key's first attempt, or at the latest this fraction of
# an attempt's deadline after the herd's release (the herd takes ~1 s to get 1,000 fetches to the
# DB; more on a busy machine).
KILL_WITHIN = 0.8
# Bounds the wait for the herd's release and first attempts.
KILL_WAIT_S = 60.0
POLL_S = 0.01
WARM_DEADLINE_S = 60.0


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


@dataclass(frozen=True)
class RetryStormConfig:
    """The scenario's knobs, each bounded (`problems()`).

    The defaults make the storm plain on a 2-core machine:
    - 1,000 keys against a DB of 20 per 100 ms: a synchronised wave of ~800 retries is many
      times its capacity;
    - a 6 s cap: full jitter spreads the same fetches over ~3 s on average (~270/s, near the DB's
      200/s; with a 4 s cap full stayed at 2.3-2.9x capacity, too close to half of exponential's
      figure on a busy machine);
    - a 2 s attempt deadline: longer than the herd takes to reach the DB (the fetches fail
      together at the kill, not one by one on their deadlines), short enough that the part of a
      wave the DB cannot serve in time fails together and comes back together;
    - 40 attempts within 60 s: no fetch gives up while a 10 s outage and its recovery last;
    - the cache's DB channel reconnects within 50..500 ms.
    """

    policies: tuple[str, ...] = ("exponential", "full")
    keys: int = 1000
    outage_s: float = 10.0
    seed: int | None = 42
    # The DB: 20 slots x 100 ms = 200 queries/s, 20 per 100 ms (1,000 keys need 5 s at best).
    db_latency_s: float = 0.1
    db_concurrency: int = 20
    # The cache's policy towards the DB: retries at base * 2^n up to the cap (exponential) or
    # uniformly below that (full jitter); enough attempts and time to outlive the outage.
    retry_base_s: float = 0.1
    retry_cap_s: float = 6.0
    retry_attempts: int = 40
    retry_total_s: float = 60.0
    attempt_timeout_s: float = 2.0
    reconnect_initial_s: float = 0.05
    reconnect_max_s: float = 0.5
    channels: int = 8

    @property
    def db_capacity_per_s(self) -> float:
        return self.db_concurrency / self.db_latency_s

    @property
    def herd_deadline_s(self) -> float:
        return self.retry_total_s + HERD_MARGIN_S

    def problems(self) -> list[str]:
        found = []
        unknown = [p for p in self.policies if p not in POLICY_NAMES]
        if not self.policies:
            found.append("name at least one retry policy")
        if unknown:
            found.append(
                f"unknown retry policy {', '.join(unknown)}; choose from {', '.join(POLICY_NAMES)}"
            )
        if len(set(self.policies)) != len(self.policies):
            found.append("each policy may be named once")
        if not 1 <= self.keys <= 100_000:
            found.append(f"keys must be in 1..100000, got {self.keys}")
        if not 0 < self.outage_s <= 600:
            found.append(f"outage must be in (0, 10m], got {self.outage_s:g}s")
        if not 0.001 <= self.db_latency_s <= 10:
            found.append(f"db latency must be in [1ms, 10s], got {self.db_latency_s:g}s")
        if not 1 <= self.db_concurrency <= 10_000:
            found.append(f"db concurrency must be in 1..10000, got {self.db_concurrency}")
        if not 0 < self.retry_base_s <= self.retry_cap_s <= 600:
            found.append("need 0 < retry base <= retry cap <= 10m")
        if not 1 <= self.retry_attempts <= 100:
            found.append(f"retry attempts must be in 1..100, got {self.retry_attempts}")
        if not self.outage_s < self.retry_total_s <= 3000:
            found.append(
                f"the retry budget ({self.retry_total_s:g}s) must outlast the outage "
                f"({self.outage_s:g}s) and be at most 50m"
            )
        if not 0 < self.attempt_timeout_s <= self.retry_total_s:
            found.append("need 0 < attempt timeout <= retry budget")
        if not 0 < self.reconnect_initial_s <= self.reconnect_max_s <= 120:
            found.append("need 0 < reconnect initial <= reconnect max <= 120s")
        if not 1 <= self.channels <= 1024:
            found.append(f"channels must be in 1..1024, got {self.channels}")
        return found

    def command(self) -> str:
        """The `chaos` command line that runs this scenario (as far as the CLI exposes it)."""
        parts = [
            "chaos scenario retry-storm",
            f"--policies {','.join(self.policies)}",
            f"--keys {self.keys}",
            f"--outage {self.outage_s:g}s",
        ]
        if self.seed is not None:
            parts.append(f"--seed {self.seed}")
        return " ".join(parts)

    def db_args(self) -> list[str]:
        return [
            "--latency",
            _ms(self.db_latency_s),
            "--spread",
            "0ms",
            "--concurrency",
            str(self.db_concurrency),
            # Room for every key's fetch: the wave queues at the DB and meets its deadline there.
            "--queue",
            str(self.keys),
            *(["--seed", str(self.seed)] if self.seed is not None else []),
        ]

    def cache_args(self, policy: str) -> list[str]:
        return [
            "--policy",
            policy,
            "--retry-base",
            _ms(self.retry_base_s),
            "--retry-cap",
            _ms(self.retry_cap_s),
            "--retry-attempts",
            str(self.retry_attempts),
            "--retry-total",
            _ms(self.retry_total_s),
            "--attempt-timeout",
            _ms(self.attempt_timeout_s),
            "--db-reconnect-initial",
            _ms(self.reconnect_initial_s),
            "--db-reconnect-max",
            _ms(self.reconnect_max_s),
            "--coalescing",
            *(["--seed", str(self.seed)] if self.seed is not None else []),
        ]

    def herd(self, target: str, key_prefix: str) -> HerdConfig:
        return HerdConfig(
            target=target,
            users=self.keys,
            keys=self.keys,
            distribution="round-robin",
            key_prefix=key_prefix,
            channels=min(self.channels, self.keys),
            policy=RetryPolicy(
                name="none",
                max_total_s=self.herd_deadline_s,
                attempt_timeout_s=self.herd_deadline_s,
            ),
            seed=self.seed,
        )


@dataclass
class _Marks:
    """What happened to the DB when, in wall-clock ns."""

    kill_ns: int  # just before the SIGKILL
    restart_ns: int  # just before its process was started again
    up_ns: int  # it accepted a TCP connection again
    serving_ns: int  # its health check answered SERVING


async def _restore(stack: LocalStack, target: str) -> tuple[int, int]:
    """Starts the DB again; returns (listening, SERVING) instants. The health check that
    `restore` waits on reconnects with gRPC's 1 s backoff, so it sees the DB late: the instant
    the DB is back is taken from a TCP connect probe instead."""
    stop = threading.Event()
    probe = asyncio.ensure_future(asyncio.to_thread(wait_listening, target, READY_TIMEOUT_S, stop))
    try:
        await in_thread(stack.restore, "db")
    except BaseException:
        stop.set()
        with contextlib.suppress(Exception):
            await probe
        raise
    serving_ns = time.time_ns()
    up_ns = await probe  # the DB is SERVING, so it listens: the probe ends within a poll
    return (up_ns or serving_ns), serving_ns


async def _wait_first_attempts(
    admin: Admin,
    before: int,
    config: RetryStormConfig,
    herd: asyncio.Task[Any],
    released: asyncio.Event,
) -> int:
    """Waits until the DB has seen every key's first attempt (`keys` arrivals since `before`),
    but no longer than `KILL_WITHIN` of an attempt's deadline after the herd's release: a fetch
    queued at the DB must still be waiting there, not timed out and retrying, when the DB dies.
    Also ends if the herd ends or after `KILL_WAIT_S`. Returns the arrivals seen."""
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    seen = 0
    for _ in range(math.ceil(KILL_WAIT_S / POLL_S)):
        if deadline is None and released.is_set():
            deadline = loop.time() + KILL_WITHIN * config.attempt_timeout_s
        seen = (await admin.db_state()).arrivals - before
        if seen >= config.keys or herd.done() or (deadline is not None and loop.time() > deadline):
            break
        await asyncio.sleep(POLL_S)
    return seen


async def _warm(admin: Admin, config: RetryStormConfig, herd: HerdConfig) -> dict[str, Any]:
    """Fills the cache with every key, quickly (the DB gets a slot per key meanwhile)."""
    await admin.set_capacity(
        admin_pb2.Capacity(concurrency=max(config.keys, config.db_concurrency))
    )
    warm = replace(
        herd,
        policy=RetryPolicy(
            name="none", max_total_s=WARM_DEADLINE_S, attempt_timeout_s=WARM_DEADLINE_S
        ),
    )
    result = await run_herd(warm)
    await admin.set_capacity(admin_pb2.Capacity(concurrency=config.db_concurrency))
    expired = await admin.expire(None)
    summary = result.summary()
    return {"ok": summary["ok"], "errors": summary["errors"], "expired": expired}


async def _phase(
    config: RetryStormConfig,
    policy: str,
    emit: Callable[[str], None],
    on_progress: ProgressFn | None,
) -> dict[str, Any]:
    async with scenario_stack("retry-storm") as stack:
        return await _run_phase(stack, config, policy, emit, on_progress)


async def _run_phase(
    stack: LocalStack,
    config: RetryStormConfig,
    policy: str,
    emit: Callable[[str], None],
    on_progress: ProgressFn | None,
) -> dict[str, Any]:
    herd_task: asyncio.Task[HerdResult] | None = None
    try:
        info = await in_thread(
            stack.up, db_args=config.db_args(), cache_args=config.cache_args(policy)
        )
        db, cache = info.services["db"], info.services["cache"]
        herd = config.herd(cache.grpc, f"storm:{policy}:")
        async with Admin(db.grpc, cache.grpc) as admin:
            warm = await _warm(admin, config, herd)
            db_before = (await admin.db_state()).arrivals
            cache_before = (await admin.cache_state()).db_attempts
            released = asyncio.Event()
            herd_task = asyncio.create_task(
                run_herd(herd, HerdHooks(on_progress, on_release=released.set))
            )
            seen = await _wait_first_attempts(admin, db_before, config, herd_task, released)
            killed_db_arrivals = await admin.db_arrivals(after_seq=db_before)
        kill_ns = time.time_ns()
        await in_thread(stack.kill, "db")
        emit(
            f"  {policy}: DB killed once {seen:,} of {config.keys:,} first attempts reached it; "
            f"down for {config.outage_s:g}s"
        )
        await asyncio.sleep(max(0.0, config.outage_s - (time.time_ns() - kill_ns) / 1e9))
        restart_ns = time.time_ns()
        up_ns, serving_ns = await _restore(stack, db.grpc)
        emit(f"  {policy}: DB restored; waiting for every key to be served")
        result = await herd_task
        async with Admin(db.grpc, cache.grpc) as admin:
            restored_db_arrivals = await admin.db_arrivals()
            attempts = await admin.cache_attempts(after_seq=cache_before)
            capacity_per_s = (await admin.db_state()).capacity_per_s
        return _row(
            config,
            policy,
            result,
            (killed_db_arrivals, restored_db_arrivals),
            attempts,
            capacity_per_s,
            _Marks(kill_ns, restart_ns, up_ns, serving_ns),
            warm,
        )
    finally:
        if herd_task is not None and not herd_task.done():
            herd_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await herd_task


def _row(
    config: RetryStormConfig,
    policy: str,
    result: HerdResult,
    db_arrivals: tuple[list[int], list[int]],
    attempts: list[int],
    capacity_per_s: float,
    marks: _Marks,
    warm: dict[str, Any],
) -> dict[str, Any]:
    """The policy's result object; `db_arrivals` is (before the kill, after the restore)."""
    t0 = result.release_ns

    def rel(t_ns: int) -> float:
        return round((t_ns - t0) / 1e9, 3)

    before_kill, after_restore = db_arrivals
    arrivals = before_kill + after_restore
    ok = [o for o in result.outcomes if o.code is None]
    served_ns = [o.done_ns for o in ok]
    keys_served = len({o.key for o in ok})
    end_ns = max([marks.serving_ns, *arrivals, *attempts, *(o.done_ns for o in result.outcomes)])
    count = math.ceil((end_ns - t0) / 1e9 / BIN_S) + 1
    per_bin = capacity_per_s * BIN_S
    peak = max(bins(after_restore, t0, count), default=0)
    summary = result.summary()
    recovery_s = (
        max(0.0, (max(served_ns) - marks.up_ns) / 1e9)
        if served_ns and keys_served == config.keys
        else None
    )
    return {
        "policy": policy,
        "keys": config.keys,
        "db_capacity_per_s": round(capacity_per_s, 3),
        "db_attempts": len(attempts),
        "amplification": round(len(attempts) / config.keys, 3),
        "post_restore_peak_per_100ms": peak,
        "post_restore_peak_over_capacity": round(peak / per_bin, 3) if per_bin else None,
        "recovery_s": None if recovery_s is None else round(recovery_s, 3),
        "ideal_recovery_s": round(config.keys / capacity_per_s, 3),
        "client_errors": sum(summary["errors"].values()),
        "lost": summary["lost"],
        "keys_served": keys_served,
        # `ideal_recovery_s` counts every key; these were still unserved when the DB came back.
        "keys_pending_at_restore": keys_served
        - len({o.key for o in ok if o.done_ns <= marks.up_ns}),
        "db_queries": len(arrivals),
        "errors": summary["errors"],
        "wrong_values": summary["wrong_values"],
        "latency_s": summary["latency_s"],
        "release_spread_s": round(result.release_spread_s, 3),
        "warm": warm,
        "timeline": {
            "bin_s": BIN_S,
            "t0_ns": t0,
            "outage": [rel(marks.kill_ns), rel(marks.up_ns)],
            "restart_s": rel(marks.restart_ns),
            "serving_s": rel(marks.serving_ns),
            "first_arrival_after_restore_s": rel(min(after_restore)) if after_restore else None,
            "db_capacity_per_bin": round(per_bin, 3),
            "db_arrivals": bins(arrivals, t0, count),
            "cache_attempts": bins(attempts, t0, count),
            "served": bins(served_ns, t0, count),
        },
    }


async def run_retry_storm(
    config: RetryStormConfig,
    emit: Callable[[str], None],
    progress: ProgressFactory | None = None,
) -> dict[str, Any]:
    """Runs one phase per policy, each on a fresh stack; returns the JSON document."""
    problems = config.problems()
    if problems:
        raise ValueError("; ".join(problems))
    rows = []
    for policy in config.policies:
        emit(
            f"Retry storm: {policy} ({config.keys:,} keys, DB {config.db_capacity_per_s:g}/s, "
            f"outage {config.outage_s:g}s)"
        )
        on_progress = progress(f"retry-storm {policy}") if progress else None
        row = await _phase(config, policy, emit, on_progress)
        recovery = row["recovery_s"]
        emit(
            f"  {policy}: peak after restore {row['post_restore_peak_per_100ms']:,}/100ms "
            f"= {row['post_restore_peak_over_capacity']:g}x capacity, "
            f"amplification {row['amplification']:g}, recovery "
            + (f"{recovery:g}s" if recovery is not None else "incomplete")
            + f" (ideal {row['ideal_recovery_s']:g}s), errors {row['client_errors']}, "
            f"lost {row['lost']}"
        )
        rows.append(row)
    return {
        "scenario": SCENARIO,
        "command": config.command(),
        "config": {**asdict(config), "policies": list(config.policies)},
        "policies": rows,
    }
