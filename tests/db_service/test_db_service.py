"""The DB over real gRPC, as a separate process: capacity (rejection past the queue), deadline
awareness (work whose caller has gone is dropped and counted), key validation, fault injection
and the exact arrival record. Also the cache's retry policy as the DB counts it.

The DB runs with one slot, a queue of two and an hour of latency, so nothing it admits finishes
by itself: each test decides when work ends (by cancelling it), and counts are exact."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support import StackClients, scrape

from chaos.lab.backends.local import StackInfo
from herdlab.grpcutil import channel_options
from herdlab.values import value_for
from protos import admin_pb2, cache_pb2

STARTED_NS = time.time_ns()
DB_ARGS = ["--concurrency", "1", "--queue", "2", "--latency", "1h", "--spread", "0ms"]
CACHE_ARGS = [
    "--policy",
    "fixed",
    "--retry-base",
    "10ms",
    "--retry-cap",
    "10ms",
    "--retry-attempts",
    "4",
    "--attempt-timeout",
    "20s",
]


async def settle_db(lab: StackClients) -> admin_pb2.DbState:
    return await lab.until_db(lambda s: s.in_flight == 0 and s.queued == 0, "DB idle")


async def test_db_rejects_past_its_queue(stack_info: StackInfo) -> None:
    async with StackClients(stack_info) as lab:
        before = await settle_db(lab)
        calls = [asyncio.create_task(lab.db_get(f"burst-{i}", timeout_s=None)) for i in range(10)]
        state = await lab.until_db(
            lambda s: s.arrivals - before.arrivals == 10 and s.rejected - before.rejected == 7,
            "10 arrivals, 7 rejected",
        )
        assert (state.in_flight, state.queued) == (1, 2)
        assert state.completed == before.completed and state.dropped == before.dropped
        # Exactly the 7 rejected calls have ended, each with RESOURCE_EXHAUSTED and a reason.
        done, pending = await asyncio.wait(calls, timeout=0)
        while len(done) < 7:
            more, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            done |= more
        assert len(done) == 7 and len(pending) == 3
        for call in done:
            error = call.exception()
            assert isinstance(error, grpc.aio.AioRpcError)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "db overloaded: queue full (2 waiting, 1 in flight)" in (error.details() or "")
        # The admitted three end when their callers go: dropped, none served.
        for call in pending:
            call.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        after = await lab.until_db(
            lambda s: s.dropped - before.dropped == 3 and s.in_flight == 0 and s.queued == 0,
            "3 dropped",
        )
        assert after.arrivals - before.arrivals == 10
        assert after.rejected - before.rejected == 7
        assert after.completed == before.completed
        metrics = await lab.metrics("db")
        assert metrics[("herdlab_db_arrivals_total", ())] == after.arrivals
        assert metrics[("herdlab_db_requests_total", (("outcome", "rejected"),))] == after.rejected


async def test_db_drops_work_whose_caller_deadline_passed(stack_info: StackInfo) -> None:
    """One caller holds the slot; a second waits in the queue with a short deadline, a third
    is admitted with a short deadline while the DB works on it. Both are dropped, not served."""
    async with StackClients(stack_info) as lab:
        before = await settle_db(lab)
        dropped_before = await lab.metrics("db")
        holder = asyncio.create_task(lab.db_get("holder", timeout_s=None))
        await lab.until_db(lambda s: s.in_flight == 1, "holder admitted")
        with pytest.raises(grpc.aio.AioRpcError) as queued_call:
            await lab.db_get("impatient-in-queue", timeout_s=0.3)
        assert queued_call.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await lab.until_db(
            lambda s: s.dropped - before.dropped == 1 and s.queued == 0, "queued caller dropped"
        )
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
        await lab.until_db(
            lambda s: s.dropped - before.dropped == 2 and s.in_flight == 0, "holder dropped"
        )
        with pytest.raises(grpc.aio.AioRpcError) as working_call:
            await lab.db_get("impatient-at-work", timeout_s=0.3)
        assert working_call.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        after = await lab.until_db(
            lambda s: s.dropped - before.dropped == 3 and s.in_flight == 0, "worker dropped"
        )
        assert after.arrivals - before.arrivals == 3
        assert after.completed == before.completed
        assert after.rejected == before.rejected
        metrics = await lab.metrics("db")

        def delta(stage: str) -> float:
            key = ("herdlab_db_dropped_total", (("stage", stage),))
            return metrics[key] - dropped_before.get(key, 0.0)

        assert (delta("queue"), delta("work")) == (1, 2)


@pytest.mark.parametrize(
    ("key", "message"),
    [("", "key must not be empty"), ("k" * 4096, "key is 4096 bytes; the limit is 256 bytes")],
    ids=["empty", "4KiB"],
)
async def test_invalid_keys_get_invalid_argument_on_both_services(
    stack_info: StackInfo, key: str, message: str
) -> None:
    async with StackClients(stack_info) as lab:
        await settle_db(lab)
        await lab.faults(latency_ms=0)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as db_error:
                await lab.db_get(key)
            assert db_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in (db_error.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as cache_error:
                await lab.cache_get(key)
            assert cache_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in (cache_error.value.details() or "")
            # Both keep serving.
            assert (await lab.db_get("valid")).value == value_for("valid", 1)
            reply = await lab.cache_get(f"valid-after-{len(key)}")
            assert reply.value == value_for(f"valid-after-{len(key)}", 1)
        finally:
            await lab.faults(latency_ms=3_600_000)


async def test_injected_errors_fail_queries_and_the_cache_retries_per_its_policy(
    stack_info: StackInfo,
) -> None:
    """error_rate=1: every admitted query fails with UNAVAILABLE. The cache's policy (fixed, 4
    attempts) makes exactly 4 attempts, all of which the DB counts; the cache answers with the
    DB's code and the number of attempts, and stores nothing."""
    async with StackClients(stack_info) as lab:
        await settle_db(lab)
        await lab.faults(latency_ms=0, error_rate=1.0)
        try:
            before, cache_before = await lab.db_state(), await lab.cache_state()
            with pytest.raises(grpc.aio.AioRpcError) as direct:
                await lab.db_get("faulty")
            assert direct.value.code() == grpc.StatusCode.UNAVAILABLE
            assert direct.value.details() == "injected fault"
            with pytest.raises(grpc.aio.AioRpcError) as via_cache:
                await lab.cache_get("faulty")
            assert via_cache.value.code() == grpc.StatusCode.UNAVAILABLE
            details = via_cache.value.details() or ""
            assert "injected fault" in details and "after 4 attempt(s)" in details
            after, cache_after = await lab.db_state(), await lab.cache_state()
            assert after.failed - before.failed == 5
            assert after.arrivals - before.arrivals == 5
            assert cache_after.db_attempts - cache_before.db_attempts == 4
            assert cache_after.keys == cache_before.keys
            # The faults go away: the same key is fetched (not a remembered failure).
            await lab.faults(error_rate=0.0)
            reply = await lab.cache_get("faulty")
            assert (reply.source, reply.value) == (cache_pb2.MISS, value_for("faulty", 1))
        finally:
            await lab.faults(latency_ms=3_600_000, error_rate=0.0)


async def test_admin_rejects_invalid_settings_with_a_message(stack_info: StackInfo) -> None:
    async with StackClients(stack_info) as lab:
        before = await lab.db_state()
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await lab.faults(error_rate=2.0)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "error rate must be in [0, 1], got 2.0" in (error.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await lab.db_admin.SetCapacity(admin_pb2.Capacity(concurrency=0), timeout=10)
        assert "concurrency must be in 1..1000000, got 0" in (error.value.details() or "")
        after = await lab.db_state()
        assert after.faults == before.faults and after.capacity == before.capacity


async def test_admin_durations_read_back_exactly_as_given(stack_info: StackInfo) -> None:
    """The DB keeps seconds, and ms / 1000 * 1000 is not always the float sent (63.7 ms, a
    subnormal spread): the reply, GetState and a timed fault's revert give back what was sent."""
    latency, spread = 63.7, 2.225e-311
    target, interval = 15.96, 127.9
    assert (latency / 1000) * 1000 != latency and (spread / 1000) * 1000 != spread
    async with StackClients(stack_info) as lab:
        try:
            reply = await lab.faults(latency_ms=latency, spread_ms=spread)
            assert (reply.faults.latency_ms, reply.faults.spread_ms) == (latency, spread)
            reply = await lab.db_admin.SetCapacity(
                admin_pb2.Capacity(codel_target_ms=target, codel_interval_ms=interval), timeout=10
            )
            assert (reply.capacity.codel_target_ms, reply.capacity.codel_interval_ms) == (
                target,
                interval,
            )
            state = await lab.db_state()
            assert (state.faults.latency_ms, state.faults.spread_ms) == (latency, spread)
            assert state.capacity.codel_target_ms == target
            timed = await lab.faults(latency_ms=500.0, for_ms=1.0)
            assert timed.faults.latency_ms == 500.0
            reverted = await lab.until_db(lambda s: not s.reverts_at_unix, "latency reverted")
            assert reverted.faults.latency_ms == latency
            # A negative spread whose seconds round to -0.0 is still negative: refused.
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await lab.faults(spread_ms=-5e-324)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "spread must be in [0, 8.64e+07] ms, got -5e-324" in (
                error.value.details() or ""
            )
            assert (await lab.db_state()).faults.spread_ms == spread
        finally:
            await lab.faults(latency_ms=3_600_000, spread_ms=0)


async def test_arrival_record_pages_through_exactly_the_arrivals(stack_info: StackInfo) -> None:
    async with StackClients(stack_info) as lab:
        state = await settle_db(lab)
        assert state.arrivals > 10, "earlier tests should have left arrivals to page through"
        times, last = await lab.arrivals(page=7)
        assert len(times) == state.arrivals == last.total
        assert last.oldest_seq == 1
        assert all(STARTED_NS <= t <= time.time_ns() for t in times)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await lab.db_admin.GetArrivals(admin_pb2.RecordRequest(limit=-1), timeout=10)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_both_services_serve_health_and_reflection(stack_info: StackInfo) -> None:
    expected = {
        "db": {"herdlab.v1.Db", "herdlab.v1.DbAdmin"},
        "cache": {"herdlab.v1.Cache", "herdlab.v1.CacheAdmin"},
    }
    for name, services in expected.items():
        target = stack_info.services[name].grpc
        async with grpc.aio.insecure_channel(target, options=channel_options()) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ["", *services]:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, (name, service)
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            listed: set[str] = set()
            async for response in reflection.ServerReflectionInfo(iter([request])):
                listed |= {s.name for s in response.list_services_response.service}
            assert services | {"grpc.health.v1.Health"} <= listed, (name, listed)
        metrics = scrape(stack_info.services[name].metrics)
        assert metrics, f"{name} serves no metrics"
