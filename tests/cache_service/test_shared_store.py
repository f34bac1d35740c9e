"""The shared store against a real redis-server: leases contended by replica processes, a holder
SIGKILLed mid-fetch, Redis killed and paused mid-burst, and values never served past their TTL.

The stack is the one `chaos up --replicas 3 --store redis` starts (redis-server from PATH). CI
installs Debian's redis-server and sets HERDLAB_REQUIRE_REDIS=1: there a missing server fails
these tests; elsewhere they are skipped.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry
from support import eventually, scrape

from cache_service.shared import SharedStore, decode, encode, parse_store
from cache_service.store import Entry
from chaos.engine.herd import HerdConfig, HerdResult, OpenLoop, replicas_target, run_herd
from chaos.lab.admin import Admin
from chaos.lab.backends.local import LocalStack, StackInfo
from chaos.lab.redis import redis_ping
from herdlab.retry import RetryPolicy
from protos import admin_pb2, cache_pb2, cache_pb2_grpc

REPLICAS = ("cache-1", "cache-2", "cache-3")
LEASE_TIMEOUT_S = 0.5


def _require_redis() -> None:
    from shutil import which

    if which("redis-server") is None:
        if os.environ.get("HERDLAB_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server not found (apt-get install redis-server)")
        pytest.skip("redis-server not installed (apt-get install redis-server)")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, StackInfo]]:
    _require_redis()
    stack = LocalStack(tmp_path_factory.mktemp("replicas"))
    info = stack.up(
        ["--concurrency", "64", "--queue", "4096", "--spread", "0ms"],
        [
            "--policy",
            "none",
            "--attempt-timeout",
            "20s",
            "--lease-timeout",
            f"{LEASE_TIMEOUT_S * 1000:g}ms",
            "--ttl",
            "60s",
        ],
        replicas=len(REPLICAS),
        store="redis",
    )
    try:
        yield stack, info
    finally:
        stack.down()
        assert all(s.state == "stopped" for s in stack.status().values())


def _metric(info: StackInfo, service: str, name: str, **labels: str) -> float:
    return scrape(info.services[service].metrics).get((name, tuple(sorted(labels.items()))), 0.0)


async def _total(info: StackInfo, name: str, **labels: str) -> float:
    return sum([await asyncio.to_thread(_metric, info, r, name, **labels) for r in REPLICAS])


@asynccontextmanager
async def _admin(info: StackInfo, cache: str = "cache-1") -> AsyncIterator[Admin]:
    async with Admin(info.services["db"].grpc, info.services[cache].grpc) as admin:
        yield admin


async def _get(info: StackInfo, cache: str, key: str) -> cache_pb2.CacheGetResponse:
    async with grpc.aio.insecure_channel(info.services[cache].grpc) as channel:
        reply: cache_pb2.CacheGetResponse = await cache_pb2_grpc.CacheStub(channel).Get(
            cache_pb2.CacheGetRequest(key=key), timeout=30
        )
        return reply


def _herd(info: StackInfo, prefix: str, **overrides: Any) -> HerdConfig:
    target = replicas_target([info.services[r].grpc for r in REPLICAS if r in info.services])
    values: dict[str, Any] = {
        "target": target,
        "users": 600,
        "keys": 1,
        "key_prefix": prefix,
        "policy": RetryPolicy(name="none", max_total_s=10.0, attempt_timeout_s=10.0),
        "channels": 4,
    }
    values.update(overrides)
    return HerdConfig(**values)


def _summary(result: HerdResult) -> dict[str, Any]:
    return result.summary()


async def test_replicas_share_one_lease_and_the_db_sees_one_query(
    replicas: tuple[LocalStack, StackInfo],
) -> None:
    _, info = replicas
    async with _admin(info) as admin:
        await admin.set_faults(admin_pb2.Faults(latency_ms=1000))
        before = (await admin.db_state()).arrivals
        leases = await _total(info, "herdlab_cache_leases_total")
        result = _summary(await run_herd(_herd(info, "contended-")))
        after = (await admin.db_state()).arrivals
    assert result["lost"] == 0 and result["ok"] == 600, result
    assert after - before == 1
    assert await _total(info, "herdlab_cache_leases_total") - leases == 1
    assert result["sources"]["MISS"] == 1, result


async def test_a_holder_killed_mid_fetch_is_taken_over_after_the_lease_timeout(
    replicas: tuple[LocalStack, StackInfo],
) -> None:
    stack, info = replicas
    key = "holder-dies"
    async with _admin(info) as admin:
        await admin.set_faults(admin_pb2.Faults(latency_ms=1000))
        before = (await admin.db_state()).arrivals
        holder = asyncio.create_task(_get(info, "cache-1", key))
        await eventually(admin.db_state, lambda s: s.arrivals == before + 1, "the holder's query")
        waiter = asyncio.create_task(_get(info, "cache-2", key))
        await eventually(
            lambda: asyncio.to_thread(_metric, info, "cache-2", "herdlab_cache_lease_waiting"),
            lambda v: v == 1,
            "cache-2 waiting on cache-1's lease",
        )
        takeovers = await asyncio.to_thread(
            _metric, info, "cache-2", "herdlab_cache_lease_takeovers_total"
        )
        await asyncio.to_thread(stack.kill, "cache-1")
        try:
            with pytest.raises(grpc.aio.AioRpcError) as killed:
                await holder
            assert killed.value.code() == grpc.StatusCode.UNAVAILABLE
            reply = await waiter
            assert reply.source == cache_pb2.MISS and reply.version >= 1
            assert (await admin.db_state()).arrivals == before + 2
            assert (
                await asyncio.to_thread(
                    _metric, info, "cache-2", "herdlab_cache_lease_takeovers_total"
                )
                == takeovers + 1
            )
            # The value the new holder stored is every replica's now.
            assert (await _get(info, "cache-3", key)).source == cache_pb2.HIT
        finally:
            await asyncio.to_thread(stack.restore, "cache-1")


@pytest.mark.parametrize("fault", ["kill", "pause"])
async def test_redis_killed_or_paused_mid_burst_every_request_ends_in_time(
    replicas: tuple[LocalStack, StackInfo], fault: str
) -> None:
    stack, info = replicas
    async with _admin(info) as admin:
        await admin.set_faults(admin_pb2.Faults(latency_ms=20))
        before = (await admin.db_state()).arrivals
        fallbacks = await _total(info, "herdlab_cache_shared_fallbacks_total", op="get")
        config = _herd(
            info,
            f"redis-{fault}-",
            distribution="unique",
            open_loop=OpenLoop(rate_per_s=100, duration_s=3.0),
            policy=RetryPolicy(name="none", max_total_s=3.0, attempt_timeout_s=3.0),
        )
        herd = asyncio.create_task(run_herd(config))
        try:
            await eventually(
                admin.db_state, lambda s: s.arrivals >= before + 30, "a third of the burst"
            )
            await asyncio.to_thread(stack.kill if fault == "kill" else stack.pause, "redis")
            result = _summary(await herd)
        finally:
            herd.cancel()
            undo = stack.restore if fault == "kill" else stack.resume
            await asyncio.to_thread(undo, "redis")
    # Every request ended with a value or a typed error within its deadline.
    assert result["lost"] == 0, result
    assert result["ok"] + sum(result["errors"].values()) == 300, result
    assert set(result["errors"]) <= {"DEADLINE_EXCEEDED", "UNAVAILABLE"}, result
    # The replicas went on answering after Redis was gone, straight from the DB.
    assert await _total(info, "herdlab_cache_shared_fallbacks_total", op="get") > fallbacks
    assert result["ok"] >= 150, result
    assert redis_ping(info.services["redis"].grpc, 5.0)


async def test_expire_on_one_replica_expires_for_every_replica(
    replicas: tuple[LocalStack, StackInfo],
) -> None:
    _, info = replicas
    key = "expired-everywhere"
    async with _admin(info) as admin:
        await admin.set_faults(admin_pb2.Faults(latency_ms=20))
        assert (await _get(info, "cache-1", key)).source == cache_pb2.MISS
        assert (await _get(info, "cache-2", key)).source == cache_pb2.HIT
        assert await admin.expire([key]) == 1  # through cache-1
    assert (await _get(info, "cache-2", key)).source == cache_pb2.MISS


async def test_values_are_never_served_past_their_ttl(
    replicas: tuple[LocalStack, StackInfo],
) -> None:
    _, info = replicas
    where = parse_store(f"redis://{info.services['redis'].grpc}/0")
    assert where is not None
    now = [1000.0]
    store = SharedStore(
        *where,
        ttl_s=10.0,
        lease_timeout_s=1.0,
        timeout_s=1.0,
        wait_limit_s=2.0,
        registry=CollectorRegistry(),
        clock=lambda: now[0],
    )
    store.keep_s = 5.0  # the stale window
    fetched: list[int] = []

    async def fetch() -> tuple[str, int]:
        fetched.append(1)
        return "v", len(fetched)

    try:
        await store.expire(["ttl-key"])
        entry, here = await store.fill("ttl-key", fetch)
        assert here and entry.expires_at == 1010.0
        assert store.fresh(await store.get("ttl-key"))
        now[0] = 1010.0  # the expiry itself: no longer fresh
        kept = await store.get("ttl-key")
        assert kept is not None and not store.fresh(kept)
        # A miss on a kept (stale) value fetches again instead of returning it.
        entry, here = await store.fill("ttl-key", fetch)
        assert here and entry.version == 2
        # Redis drops it after the TTL plus the kept window, not later.
        left_ms = await store.client.pttl(store.value_key("ttl-key"))
        assert 0 < left_ms <= 15_000
    finally:
        await store.close()


def test_entries_round_trip_with_any_value() -> None:
    entry = Entry("a|b|c\n", 7, 1234.5, 0.25)
    assert decode(encode(entry)) == entry


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("redis://127.0.0.1/0", "redis://HOST:PORT/N"),
        ("memcached://127.0.0.1:1/0", "redis://HOST:PORT/N"),
        ("redis://127.0.0.1:6379/99", "0..15"),
    ],
)
def test_bad_store_urls_are_named(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("/", ".").replace(":", ".")):
        parse_store(text)


def test_up_with_redis_and_no_redis_server_on_path_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "--state-dir", str(tmp_path), "up", "--store", "redis"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "redis-server" in lines[0] and "apt-get install" in lines[0]
    assert not (tmp_path / "stack.json").exists()
