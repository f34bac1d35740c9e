"""The cache over real gRPC in front of a real DB process: sources (HIT, MISS, COALESCED),
single-flight across hundreds of concurrent clients, the stampede with coalescing off, expiry,
shared errors, and typed errors while the DB is down with nothing failed cached.

The cache's policy is `none` (one DB attempt per fetch), so DB arrivals count fetches exactly.
Ordering comes from a gate on the DB (see `support.DbGate`), never from timing."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest
from support import DbGate, StackClients, eventually

from chaos.lab.backends.local import LocalStack, StackInfo
from herdlab.values import value_for
from protos import admin_pb2, cache_pb2

DB_ARGS = ["--concurrency", "1", "--queue", "100000", "--latency", "0ms", "--spread", "0ms"]
CACHE_ARGS = ["--policy", "none", "--attempt-timeout", "60s", "--ttl", "1h"]
WAITERS = "herdlab_cache_coalesced_waiters"


def source_names(replies: list[cache_pb2.CacheGetResponse]) -> Counter[str]:
    return Counter(cache_pb2.Source.Name(r.source) for r in replies)


async def test_sources_miss_coalesced_then_hit(stack_info: StackInfo) -> None:
    async with StackClients(stack_info) as lab:
        gate = DbGate(lab)
        await gate.shut()
        first = asyncio.create_task(lab.cache_get("sources"))
        await lab.until_db(lambda s: s.queued == 1, "the fetch waits behind the gate")
        second = asyncio.create_task(lab.cache_get("sources"))
        await lab.until_metric("cache", WAITERS, lambda v: v == 1)
        await gate.open()
        miss, coalesced = await first, await second
        hit = await lab.cache_get("sources")
        expected = value_for("sources", 1)
        assert (miss.source, miss.value, miss.version) == (cache_pb2.MISS, expected, 1)
        assert (coalesced.source, coalesced.value) == (cache_pb2.COALESCED, expected)
        assert (hit.source, hit.value) == (cache_pb2.HIT, expected)
        assert await gate.arrivals_since() == 1


async def test_single_flight_500_concurrent_clients_cost_one_db_query(
    stack_info: StackInfo,
) -> None:
    clients, key = 500, "cold-single-flight"
    async with StackClients(stack_info) as lab:
        requests_before = await lab.metrics("cache")
        cache_before = await lab.cache_state()
        gate = DbGate(lab)
        await gate.shut()
        calls = [asyncio.create_task(lab.cache_get(key)) for _ in range(clients)]
        await lab.until_metric("cache", WAITERS, lambda v: v == clients - 1)
        db = await lab.db_state()
        assert db.queued == 1, "one fetch for 500 clients"
        assert (await lab.cache_state()).in_flight_keys == 1
        await gate.open()
        replies = await asyncio.gather(*calls)
        assert all((r.key, r.value, r.version) == (key, value_for(key, 1), 1) for r in replies)
        assert source_names(replies) == {"MISS": 1, "COALESCED": clients - 1}
        assert await gate.arrivals_since() == 1
        cache_after = await lab.cache_state()
        assert cache_after.db_attempts - cache_before.db_attempts == 1
        assert cache_after.in_flight_keys == 0
        metrics = await lab.metrics("cache")
        ok_coalesced = ("herdlab_cache_requests_total", (("result", "ok"), ("source", "coalesced")))
        assert metrics[ok_coalesced] - requests_before.get(ok_coalesced, 0.0) == clients - 1
        assert metrics[(WAITERS, ())] == 0


async def test_coalescing_off_every_client_queries_the_db(stack_info: StackInfo) -> None:
    clients, key = 200, "cold-stampede"
    async with StackClients(stack_info) as lab:
        state = await lab.cache_admin.SetCoalescing(admin_pb2.Coalescing(enabled=False))
        assert not state.coalescing
        try:
            gate = DbGate(lab)
            await gate.shut()
            calls = [asyncio.create_task(lab.cache_get(key)) for _ in range(clients)]
            await lab.until_db(lambda s: s.queued == clients, "every client's fetch queued")
            await gate.open()
            replies = await asyncio.gather(*calls)
            assert all(r.value == value_for(key, 1) for r in replies)
            assert source_names(replies) == {"MISS": clients}
            assert await gate.arrivals_since() == clients
        finally:
            await lab.cache_admin.SetCoalescing(admin_pb2.Coalescing(enabled=True))
        assert (await lab.cache_state()).coalescing


async def test_a_cancelled_client_does_not_cancel_the_fetch_for_others(
    stack_info: StackInfo,
) -> None:
    """The first client starts the fetch and goes away (its call is cancelled); a client that
    arrives afterwards joins the same fetch and gets the value; the DB saw one query."""
    async with StackClients(stack_info) as lab:
        gate = DbGate(lab)
        await gate.shut()
        leaver = asyncio.create_task(lab.cache_get("leader-leaves"))
        await lab.until_db(lambda s: s.queued == 1, "the fetch waits behind the gate")
        leaver.cancel()
        await asyncio.gather(leaver, return_exceptions=True)
        assert (await lab.cache_state()).in_flight_keys == 1, "the fetch outlives its starter"
        stayer = asyncio.create_task(lab.cache_get("leader-leaves"))
        await lab.until_metric("cache", WAITERS, lambda v: v == 1)
        await gate.open()
        reply = await stayer
        assert (reply.source, reply.value) == (cache_pb2.COALESCED, value_for("leader-leaves", 1))
        assert await gate.arrivals_since() == 1


async def test_waiters_share_one_failure_and_it_is_not_cached(stack_info: StackInfo) -> None:
    clients, key = 50, "shared-failure"
    async with StackClients(stack_info) as lab:
        gate = DbGate(lab)
        await gate.shut()
        await lab.faults(error_rate=1.0)
        try:
            calls = [asyncio.create_task(lab.cache_get(key)) for _ in range(clients)]
            await lab.until_metric("cache", WAITERS, lambda v: v == clients - 1)
            await gate.open()
            results = await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await lab.faults(error_rate=0.0)
        errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(errors) == clients
        assert {e.code() for e in errors} == {grpc.StatusCode.UNAVAILABLE}
        assert {e.details() for e in errors} == {
            "db UNAVAILABLE: injected fault (after 1 attempt(s))"
        }
        assert await gate.arrivals_since() == 1
        assert (await lab.db_state()).failed >= 1
        reply = await lab.cache_get(key)
        assert (reply.source, reply.value) == (cache_pb2.MISS, value_for(key, 1))
        assert await gate.arrivals_since() == 2


async def test_expire_keys_and_all(stack_info: StackInfo) -> None:
    async with StackClients(stack_info) as lab:
        keys = ["exp-a", "exp-b"]
        for key in keys:
            assert (await lab.cache_get(key)).source == cache_pb2.MISS
        assert [(await lab.cache_get(k)).source for k in keys] == [cache_pb2.HIT] * 2
        reply = await lab.cache.Expire(cache_pb2.ExpireRequest(keys=["exp-a", "never-seen"]))
        assert reply.expired == 1
        assert (await lab.cache_get("exp-a")).source == cache_pb2.MISS
        assert (await lab.cache_get("exp-b")).source == cache_pb2.HIT
        stored = (await lab.cache_state()).keys
        assert stored >= 2
        reply = await lab.cache.Expire(cache_pb2.ExpireRequest(all=True))
        assert reply.expired == stored
        assert (await lab.cache_state()).keys == 0
        assert [(await lab.cache_get(k)).source for k in keys] == [cache_pb2.MISS] * 2


@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        ({}, "give keys to expire, or all"),
        ({"keys": ["a"], "all": True}, "give either keys or all, not both"),
        ({"keys": ["ok", ""]}, "key must not be empty"),
        ({"keys": ["k" * 4096]}, "key is 4096 bytes"),
    ],
    ids=["nothing", "both", "empty-key", "4KiB-key"],
)
async def test_expire_rejects_bad_requests(
    stack_info: StackInfo, request_args: dict[str, object], message: str
) -> None:
    async with StackClients(stack_info) as lab:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await lab.cache.Expire(cache_pb2.ExpireRequest(**request_args))  # type: ignore[arg-type]
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (error.value.details() or "")


async def test_db_down_gives_a_typed_error_and_nothing_failed_is_cached(
    lab_stack: tuple[LocalStack, StackInfo],
) -> None:
    """Kills the DB process: the cache answers UNAVAILABLE with a message (not a hang, not an
    opaque error) and stores nothing; once the DB is restored the same key is fetched."""
    stack, info = lab_stack
    key = "while-db-down"
    async with StackClients(info) as lab:
        keys_before = (await lab.cache_state()).keys
        await asyncio.to_thread(stack.kill, "db")
        try:
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await lab.cache_get(key)
                assert error.value.code() == grpc.StatusCode.UNAVAILABLE
                details = error.value.details() or ""
                assert details.startswith("db UNAVAILABLE: ") and "(after 1 attempt(s))" in details
            state = await lab.cache_state()
            assert (state.keys, state.in_flight_keys) == (keys_before, 0)
        finally:
            await asyncio.to_thread(stack.restore, "db")

        async def get_once() -> cache_pb2.CacheGetResponse | grpc.aio.AioRpcError:
            try:
                return await lab.cache_get(key)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                return exc  # the cache's channel may still be backing off its reconnect

        reply = await eventually(
            get_once, lambda r: isinstance(r, cache_pb2.CacheGetResponse), "a Get after restore"
        )
        assert isinstance(reply, cache_pb2.CacheGetResponse)
        assert (reply.source, reply.value) == (cache_pb2.MISS, value_for(key, 1))
        assert (await lab.cache_get(key)).source == cache_pb2.HIT
        assert (await lab.db_state()).completed == 1, "the restored DB served exactly that fetch"
