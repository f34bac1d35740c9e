"""`RedisLease` behind `single_flight` against a real redis-server: callers in two "processes"
(two leases, each with its own Redis connections and pub/sub, as two processes have) make one
call per key between them; a holder's failure reaches the other's waiters as `LeaseFailed`; with
Redis gone every process calls for itself. Skipped without redis-server, as the shared-store
tests are (CI requires it)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from chaos.lab.ports import HOST, free_port
from chaos.lab.redis import redis_config, wait_redis
from herdlab.lease import LeaseFailed, RedisLease
from herdlab.singleflight import single_flight


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    server = shutil.which("redis-server")
    if server is None:
        if os.environ.get("HERDLAB_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server not found (apt-get install redis-server)")
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    port = free_port()
    config = tmp_path / "redis.conf"
    config.write_text(redis_config(port, tmp_path))
    process = subprocess.Popen([server, str(config)], stdout=subprocess.DEVNULL)
    try:
        assert wait_redis(f"{HOST}:{port}", 10.0, lambda: process.poll() is None)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


async def subscribed(client: Redis, *keys: str) -> None:
    """Waits (bounded) until a process waits on each key's lease: subscribed to its channel, so
    the holder's publication reaches it."""
    channels = [f"herdlab:sf:ch:{key}" for key in keys]
    for _ in range(2000):
        counts = dict(await client.pubsub_numsub(*channels))
        if all(counts.get(c.encode(), 0) == 1 for c in channels):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"nobody waits on {keys}")


def lease(port: int) -> RedisLease[dict[str, int]]:
    return RedisLease(Redis(host=HOST, port=port), lease_timeout_s=2.0, timeout_s=1.0)


async def test_two_processes_make_one_call_per_key(redis_port: int) -> None:
    leases = [lease(redis_port), lease(redis_port)]
    calls: list[str] = []
    gate = asyncio.Event()

    def process(held: RedisLease[dict[str, int]]) -> object:
        @single_flight(key=lambda sku: sku, lease=held)
        async def stock(sku: str) -> dict[str, int]:
            calls.append(sku)
            await gate.wait()
            return {"count": len(sku)}

        return stock

    first, second = (process(held) for held in leases)
    tasks = [
        asyncio.ensure_future(fn(sku))  # type: ignore[operator]
        for sku in ("a", "bb")
        for fn in (first, second)
        for _ in range(5)
    ]
    await subscribed(leases[0].client, "a", "bb")
    assert sorted(calls) == ["a", "bb"]
    gate.set()
    results = await asyncio.gather(*tasks)
    assert sorted(calls) == ["a", "bb"]  # one call per key, across both
    assert results == [{"count": 1}] * 10 + [{"count": 2}] * 10
    for held in leases:
        await held.close()
        await held.client.aclose()


async def test_a_holders_failure_reaches_the_other_processs_callers(redis_port: int) -> None:
    holder, waiter = lease(redis_port), lease(redis_port)
    gate = asyncio.Event()

    async def failing() -> dict[str, int]:
        await gate.wait()
        raise RuntimeError("backend down")

    async def never() -> dict[str, int]:
        raise AssertionError("the waiter must not call")

    held = asyncio.ensure_future(holder.run("k", failing))
    for _ in range(2000):
        if await holder.client.exists("herdlab:sf:lease:k"):
            break
        await asyncio.sleep(0.005)
    waiting = asyncio.ensure_future(waiter.run("k", never))
    await subscribed(holder.client, "k")
    gate.set()
    with pytest.raises(RuntimeError, match="backend down"):
        await held
    with pytest.raises(LeaseFailed, match="backend down"):
        await waiting
    for one in (holder, waiter):
        await one.close()
        await one.client.aclose()


async def test_without_redis_each_process_calls_for_itself() -> None:
    gone: RedisLease[dict[str, int]] = RedisLease(Redis(host=HOST, port=free_port()), timeout_s=0.2)
    calls = 0

    async def compute() -> dict[str, int]:
        nonlocal calls
        calls += 1
        return {"count": 3}

    assert await gone.run("k", compute) == ({"count": 3}, True)
    assert calls == 1
    await gone.close()
    await gone.client.aclose()
