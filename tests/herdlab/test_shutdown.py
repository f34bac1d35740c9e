"""Graceful shutdown over real processes: SIGTERM with requests in flight.

For each service: requests are parked in it (at the DB: holding slots and waiting in its queue;
at the cache: a fetch and its coalesced waiters, for a key the DB will answer in time and for a
key it never will), then the service gets SIGTERM. Expected, in order: its health (a Watch
stream opened before) turns NOT_SERVING; new connections are refused while it drains; every
parked request is answered, with its value when the work ends within the grace period and with
UNAVAILABLE when it cannot; the process exits with code 0. "Within the grace period" is shown by
the request whose work takes an hour: it is answered, so the server cut it at the grace period
rather than leaving it to hang. Drain times are printed (`pytest -s`) for RELIABILITY.md.

Ordering comes from the services' own state (DB slots and queue, the cache's waiters), never from
timing.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import psutil
from conftest import running_stack
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import StackClients, eventually

from chaos.lab.backends.local import StackInfo
from herdlab.grpcutil import channel_options
from herdlab.values import value_for

GRACE_S = 3.0
EXIT_GUARD_S = GRACE_S + 30.0  # only bounds a hang; the exit itself is awaited
HOUR_MS = 3_600_000.0
WORK_MS = 200.0
WAITERS = "herdlab_cache_coalesced_waiters"


async def refused(target: str) -> bool:
    """True if a new connection to `target` is refused."""
    async with grpc.aio.insecure_channel(target, options=channel_options()) as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code() == grpc.StatusCode.UNAVAILABLE
    return False


async def outcome(call: Awaitable[Any], sigterm_at: float) -> tuple[str, float]:
    """('value' or the code name, seconds from SIGTERM to the answer)."""
    try:
        reply = await call
        result = "value" if reply.value == value_for(reply.key, reply.version) else "wrong value"
    except grpc.aio.AioRpcError as exc:
        result = exc.code().name
    return result, time.monotonic() - sigterm_at


async def sigterm_and_drain(
    info: StackInfo,
    service: str,
    gate: asyncio.Task[Any],
    finishing: Sequence[asyncio.Task[Any]],
    overrunning: Sequence[asyncio.Task[Any]],
) -> None:
    """SIGTERMs `service` with the given calls in flight, opens the DB's `gate` (a query holding
    the slot the finishing work needs) once the drain has begun, and checks the drain."""
    target, pid = info.services[service].grpc, info.services[service].pid
    assert pid is not None
    process = psutil.Process(pid)
    async with grpc.aio.insecure_channel(target, options=channel_options()) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        assert not any(t.done() for t in (*finishing, *overrunning)), "calls must be in flight"

        sigterm_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        answers = [
            asyncio.ensure_future(outcome(t, sigterm_at)) for t in (*finishing, *overrunning)
        ]
        update = await watch.read()
        assert update.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await eventually(lambda: refused(target), bool, f"new connections to {service} refused")
        assert not any(t.done() for t in (*finishing, *overrunning)), "refused while draining"
        gate.cancel()

        results = await asyncio.gather(*answers)
        returncode = await asyncio.to_thread(process.wait, EXIT_GUARD_S)
        exited_s = time.monotonic() - sigterm_at
        watch.cancel()
    await asyncio.gather(gate, return_exceptions=True)

    assert [r for r, _ in results[: len(finishing)]] == ["value"] * len(finishing)
    assert [r for r, _ in results[len(finishing) :]] == ["UNAVAILABLE"] * len(overrunning)
    assert returncode == 0
    assert all(at <= exited_s for _, at in results), "every call answered before the exit"
    finished = max(at for _, at in results[: len(finishing)])
    cut = max(at for _, at in results[len(finishing) :])
    print(
        f"\ndrain {service}: grace {GRACE_S:g}s; {len(finishing)} in-flight calls answered with "
        f"their value by {finished:.3f}s, {len(overrunning)} overrunning calls UNAVAILABLE at "
        f"{cut:.3f}s, exit 0 at {exited_s:.3f}s (from SIGTERM)"
    )


def start(calls: int, make: Callable[[], Awaitable[Any]]) -> list[asyncio.Task[Any]]:
    return [asyncio.ensure_future(make()) for _ in range(calls)]


DB_ARGS = ["--concurrency", "2", "--queue", "10", "--latency", "0ms", "--spread", "0ms"]


async def hold_slots(
    lab: StackClients, overrun: Callable[[], list[asyncio.Task[Any]]]
) -> tuple[asyncio.Task[Any], list[asyncio.Task[Any]]]:
    """Fills the DB's two slots with hour-long work: first what `overrun()` starts, then a gate
    query. Work admitted afterwards takes WORK_MS. Returns (gate, overrunning calls)."""
    await lab.faults(latency_ms=HOUR_MS)
    overrunning = overrun()
    await lab.until_db(lambda s: s.in_flight == 1, "the hour-long work holds a slot")
    gate = asyncio.ensure_future(lab.db_get("gate", timeout_s=None))
    await lab.until_db(lambda s: s.in_flight == 2, "the gate holds the other slot")
    await lab.faults(latency_ms=WORK_MS)
    return gate, overrunning


async def test_db_drains_on_sigterm(tmp_path: Path) -> None:
    """Parked at the DB: one query with an hour of work in a slot, and two queued behind the gate
    that will each take WORK_MS once it opens."""
    with running_stack(tmp_path, [*DB_ARGS, "--grace", f"{GRACE_S:g}s"], ()) as (_, info):
        async with StackClients(info) as lab:
            gate, overrunning = await hold_slots(
                lab, lambda: start(1, lambda: lab.db_get("hour", None))
            )
            finishing = start(1, lambda: lab.db_get("work", None)) + start(
                1, lambda: lab.db_get("queued", None)
            )
            await lab.until_db(lambda s: s.queued == 2, "two queries queued behind the gate")
            await sigterm_and_drain(info, "db", gate, finishing, overrunning)


async def test_cache_drains_on_sigterm(tmp_path: Path) -> None:
    """Parked at the cache: for each of two keys, a fetch (MISS) and two coalesced waiters; one
    fetch has an hour of work at the DB, the other waits behind the gate, then takes WORK_MS."""
    cache_args = ["--policy", "none", "--attempt-timeout", "1h", "--retry-total", "1h"]
    with running_stack(tmp_path, DB_ARGS, [*cache_args, "--grace", f"{GRACE_S:g}s"]) as (_, info):
        async with StackClients(info) as lab:
            gate, overrunning = await hold_slots(
                lab, lambda: start(3, lambda: lab.cache_get("hour", 3600))
            )
            await lab.until_metric("cache", WAITERS, lambda v: v == 2)
            finishing = start(3, lambda: lab.cache_get("work", 3600))
            await lab.until_db(lambda s: s.queued == 1, "the second fetch queued behind the gate")
            await lab.until_metric("cache", WAITERS, lambda v: v == 4)
            await sigterm_and_drain(info, "cache", gate, finishing, overrunning)
            await lab.until_db(
                lambda s: s.in_flight == 0 and s.queued == 0, "the cache's fetches are released"
            )
