"""Stale serving and early refresh over real gRPC: an in-process cache server on 127.0.0.1 whose
store runs on an injected clock (expiry without sleeping) in front of a real DB process; and the
cache process's admin plane (SetFreshness) and the DB's exact per-key peak.

Ordering comes from the DB gate (`support.DbGate`: the DB's only slot held), never from timing.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry
from support import DbGate, StackClients, eventually

from cache_service.dbclient import DbClient
from cache_service.freshness import Freshness
from cache_service.server import Cache, CacheServicer
from cache_service.store import TtlStore
from chaos.lab.backends.local import LocalStack, StackInfo
from herdlab.grpcutil import Service
from herdlab.retry import RetryPolicy
from herdlab.values import value_for
from protos import admin_pb2, cache_pb2, cache_pb2_grpc

DB_ARGS = ["--concurrency", "1", "--queue", "100000", "--latency", "0ms", "--spread", "0ms"]
CACHE_ARGS = ["--policy", "none", "--attempt-timeout", "60s", "--ttl", "1h"]
TTL_S = 10.0


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


class AlwaysEarly(random.Random):
    """XFetch's draw at its extreme (u near 0): every read of a fresh value draws a refresh."""

    def random(self) -> float:
        return 1.0 - 2.0**-53  # the largest value random() returns: u = 2**-53


@dataclass
class InProcessCache:
    cache: Cache
    clock: Clock
    stub: cache_pb2_grpc.CacheAsyncStub
    registry: CollectorRegistry

    async def get(self, key: str) -> cache_pb2.CacheGetResponse:
        reply: cache_pb2.CacheGetResponse = await self.stub.Get(
            cache_pb2.CacheGetRequest(key=key), timeout=60
        )
        return reply

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def in_process_cache(
    info: StackInfo, freshness: Freshness, rng: random.Random | None = None
) -> AsyncIterator[InProcessCache]:
    clock = Clock()
    registry = CollectorRegistry()
    db = DbClient(
        info.services["db"].grpc,
        RetryPolicy(name="none", max_total_s=60.0, attempt_timeout_s=60.0),
        registry,
    )
    cache = Cache(
        TtlStore(TTL_S, 1000, clock=clock), db, True, registry, freshness, rng or random.Random(1)
    )
    server = grpc.aio.server()
    Service(CacheServicer(cache), cache_pb2.DESCRIPTOR.services_by_name["Cache"]).mount(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield InProcessCache(
            cache,
            clock,
            cache_pb2_grpc.CacheStub(channel),
            registry,
        )
    finally:
        await channel.close(grace=None)
        await server.stop(None)
        await cache.close()
        await db.close()


async def test_stale_while_revalidate_serves_within_its_bound_and_never_at_or_past_it(
    stack_info: StackInfo,
) -> None:
    async with in_process_cache(stack_info, Freshness(stale_while_revalidate_s=5.0)) as c:
        c.cache.set_coalescing(True)
        await c.get("swr-bound")
        # A stale value is served while its refresh is held at the DB's gate: the refresh
        # cannot land and move the expiry, so the clock alone decides.
        async with StackClients(stack_info) as lab:
            gate = DbGate(lab)
            await gate.shut()
            c.clock.now += TTL_S + 4.999
            stale = await c.get("swr-bound")
            assert stale.source == cache_pb2.STALE
            assert stale.stale_age_s == pytest.approx(4.999)
            assert stale.value == value_for("swr-bound", 1)
            c.clock.now += 0.001  # expired exactly 5 s ago: never served stale
            fetch = asyncio.create_task(c.get("swr-bound"))
            await lab.until_db(lambda s: s.queued == 1, "the refresh waits at the gate")

            async def waiting() -> int:
                return c.cache.coalescer.waiters

            await eventually(waiting, lambda n: n == 1, "the caller waits on the refresh")
            await gate.open()
            assert (await fetch).source in (cache_pb2.MISS, cache_pb2.COALESCED)
        assert c.cache.max_stale_age_s == pytest.approx(4.999)


async def test_stale_while_revalidate_runs_one_background_refresh_per_key(
    stack_info: StackInfo,
) -> None:
    keys, readers = ("swr-a", "swr-b"), 100
    async with in_process_cache(stack_info, Freshness(stale_while_revalidate_s=30.0)) as c:
        for key in keys:
            await c.get(key)
        async with StackClients(stack_info) as lab:
            gate = DbGate(lab)
            await gate.shut()
            c.clock.now += TTL_S + 1.0
            replies = await asyncio.gather(*(c.get(k) for k in keys for _ in range(readers)))
            assert Counter(r.source for r in replies) == {cache_pb2.STALE: len(keys) * readers}
            await lab.until_db(lambda s: s.queued == len(keys), "the refreshes reach the gate")
            assert c.cache.stale_refreshes == len(keys)
            await gate.open()
            assert await gate.arrivals_since() == len(keys)
        await eventually(
            lambda: c.get(keys[0]), lambda r: r.source == cache_pb2.HIT, "the refresh landed"
        )
        assert c.sample("herdlab_cache_refreshes_total", trigger="stale") == len(keys)
        assert c.sample("herdlab_cache_requests_total", source="stale", result="ok") == (
            len(keys) * readers
        )
        assert c.sample("herdlab_cache_stale_age_seconds_count", reason="revalidate") == (
            len(keys) * readers
        )
        assert c.sample("herdlab_cache_stale_age_seconds_sum", reason="revalidate") == (
            pytest.approx(len(keys) * readers * 1.0)
        )


async def test_stale_if_error_serves_the_old_value_only_within_its_bound(
    stack_info: StackInfo,
) -> None:
    async with in_process_cache(stack_info, Freshness(stale_if_error_s=20.0)) as c:
        await c.get("sie")
        async with StackClients(stack_info) as lab:
            await lab.faults(error_rate=1.0)
            try:
                c.clock.now += TTL_S + 19.9
                stale = await c.get("sie")
                assert stale.source == cache_pb2.STALE
                assert stale.stale_age_s == pytest.approx(19.9)
                c.clock.now += 0.1  # expired exactly 20 s ago
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await c.get("sie")
                assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
            finally:
                await lab.faults(error_rate=0.0)
        assert c.sample("herdlab_cache_stale_age_seconds_count", reason="error") == 1
        assert c.sample("herdlab_cache_requests_total", source="miss", result="error") == 1


async def test_stale_if_error_off_gives_the_error(stack_info: StackInfo) -> None:
    async with in_process_cache(stack_info, Freshness(stale_while_revalidate_s=1.0)) as c:
        await c.get("no-sie")
        async with StackClients(stack_info) as lab:
            await lab.faults(error_rate=1.0)
            try:
                c.clock.now += TTL_S + 1.0  # past stale-while-revalidate, no stale-if-error
                with pytest.raises(grpc.aio.AioRpcError):
                    await c.get("no-sie")
            finally:
                await lab.faults(error_rate=0.0)
        assert c.cache.stale_served == 0


async def test_xfetch_refreshes_early_once_while_serving_hits(stack_info: StackInfo) -> None:
    async with in_process_cache(stack_info, Freshness(beta=1.0), AlwaysEarly()) as c:
        await c.get("early")
        entry = c.cache.store.get("early")
        assert entry is not None and entry.delta_s > 0, "the fetch's recompute time is kept"
        async with StackClients(stack_info) as lab:
            gate = DbGate(lab)
            await gate.shut()
            # Fresh for one more recompute time: a draw of u = 2**-53 reaches 36.7 of them back.
            c.clock.now = entry.expires_at - entry.delta_s
            replies = await asyncio.gather(*(c.get("early") for _ in range(50)))
            assert {r.source for r in replies} == {cache_pb2.HIT}
            await lab.until_db(lambda s: s.queued == 1, "the early refresh reaches the gate")
            assert c.cache.early_refreshes == 1, "one early refresh for 50 reads"
            await gate.open()
            assert await gate.arrivals_since() == 1
        assert c.cache.early_refreshes == 1
        assert c.sample("herdlab_cache_refreshes_total", trigger="early") == 1


async def test_set_freshness_over_the_admin_plane(stack_info: StackInfo) -> None:
    async with StackClients(stack_info) as lab:
        state = await lab.set_freshness(
            admin_pb2.Freshness(stale_while_revalidate_s=5, beta=1, ttl_jitter_pct=10)
        )
        f = state.freshness
        assert (f.stale_while_revalidate_s, f.stale_if_error_s, f.beta, f.ttl_jitter_pct) == (
            5,
            0,
            1,
            10,
        )
        state = await lab.set_freshness(admin_pb2.Freshness(stale_if_error_s=30))
        assert (state.freshness.stale_while_revalidate_s, state.freshness.stale_if_error_s) == (
            5,
            30,
        ), "unset fields keep their value"
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await lab.cache_admin.SetFreshness(admin_pb2.Freshness(ttl_jitter_pct=95), timeout=10)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "ttl_jitter_pct" in (bad.value.details() or "")
        await lab.set_freshness(
            admin_pb2.Freshness(
                stale_while_revalidate_s=0, stale_if_error_s=0, beta=0, ttl_jitter_pct=0
            )
        )


async def test_db_keeps_the_exact_peak_of_queries_for_one_key(stack_info: StackInfo) -> None:
    clients = 7
    async with StackClients(stack_info) as lab:
        await lab.set_coalescing(False)
        try:
            await lab.expire(["peak-key"])
            gate = DbGate(lab)
            await gate.shut()
            assert (await lab.reset_db_peaks()).max_in_flight_per_key == 1, "the gate's query"
            calls = [asyncio.create_task(lab.cache_get("peak-key")) for _ in range(clients)]
            await lab.until_db(lambda s: s.queued == clients, "every miss queued at the DB")
            await gate.open()
            await asyncio.gather(*calls)
            assert (await lab.db_state()).max_in_flight_per_key == clients
            assert (await lab.reset_db_peaks()).max_in_flight_per_key == 0
        finally:
            await lab.set_coalescing(True)


def chaos(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERDLAB_STATE_DIR": str(state_dir)}
    return subprocess.run(
        [sys.executable, "-m", "chaos", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def test_chaos_freshness_sets_the_policy_and_journals_it(
    lab_stack: tuple[LocalStack, StackInfo],
) -> None:
    stack, info = lab_stack
    async with StackClients(info) as lab:
        dry = await asyncio.to_thread(
            chaos, stack.state_dir, "freshness", "--sie", "30s", "--dry-run"
        )
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.startswith("would freshness cache (stale_if_error_s=30)")
        assert (await lab.cache_state()).freshness.stale_if_error_s == 0
        args = ["freshness", "--swr", "5s", "--sie", "30s", "--beta", "1", "--ttl-jitter", "10"]
        done = await asyncio.to_thread(chaos, stack.state_dir, *args, "--json")
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert (doc["verb"], doc["target"], doc["result"]) == ("freshness", "cache", "ok")
        assert (doc["stale_while_revalidate_s"], doc["stale_if_error_s"]) == (5, 30)
        assert (doc["beta"], doc["ttl_jitter_pct"]) == (1, 10)
        state = (await lab.cache_state()).freshness
        assert (state.stale_while_revalidate_s, state.beta) == (5, 1)
        journal = (stack.state_dir / "journal.jsonl").read_text().splitlines()
        assert json.loads(journal[-1])["verb"] == "freshness"
        off = await asyncio.to_thread(
            chaos,
            stack.state_dir,
            "freshness",
            "--swr",
            "0s",
            "--sie",
            "0s",
            "--beta",
            "0",
            "--ttl-jitter",
            "0",
        )
        assert off.returncode == 0, off.stderr
        assert (await lab.cache_state()).freshness == admin_pb2.Freshness(
            stale_while_revalidate_s=0, stale_if_error_s=0, beta=0, ttl_jitter_pct=0
        )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["freshness"], "give at least one of --swr, --sie, --beta, --ttl-jitter"),
        (["freshness", "--ttl-jitter", "95"], "ttl jitter must be in [0, 90]"),
        (["freshness", "--beta", "-1"], "beta must be in [0, 100]"),
        (["freshness", "--sie", "soon"], "--sie"),
    ],
)
def test_chaos_freshness_bad_input_exits_2_with_one_line(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    result = chaos(tmp_path, *args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chaos: error: "), result.stderr
    assert needle in lines[0]
