"""How a lab server is built (`herdlab.grpcutil.build_server`), over real gRPC in-process: only a
data-plane service registers its methods, because grpc.aio's serving loop walks one waiting task
per registered method on every call; everything else (admin services, health, reflection) is
still answered, through its generic handler."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from herdlab.chaoslog import chaos_log_service
from herdlab.grpcutil import (
    Context,
    MaxAge,
    ServerCalls,
    Service,
    build_server,
    channel_options,
)
from protos import cache_pb2, cache_pb2_grpc, chaos_pb2, chaos_pb2_grpc

REPLY = cache_pb2.CacheGetResponse(key="k", value="v", version=1, source=cache_pb2.HIT)


class ConstantCache(cache_pb2_grpc.CacheServicer):
    def Get(
        self, request: cache_pb2.CacheGetRequest, context: Context
    ) -> cache_pb2.CacheGetResponse:
        return REPLY

    async def Expire(
        self, request: cache_pb2.ExpireRequest, context: Context
    ) -> cache_pb2.ExpireResponse:
        return cache_pb2.ExpireResponse(expired=0)


def _waiting_tasks() -> Counter[str]:
    """grpc.aio's serving-loop tasks by kind: one per registered method, one for the rest."""
    names = (getattr(t.get_coro(), "__qualname__", "") for t in asyncio.all_tasks())
    return Counter(n.rsplit(".", 1)[-1] for n in names if "_request_" in n)


async def test_only_the_data_plane_registers_and_every_service_still_answers() -> None:
    data = Service(ConstantCache(), cache_pb2.DESCRIPTOR.services_by_name["Cache"], registered=True)
    admin = chaos_log_service(CollectorRegistry())
    lab = build_server([data, admin], host="127.0.0.1", port=0)
    await lab.start()
    try:
        # Cache's Get and Expire; ChaosLog, health and reflection add none.
        assert _waiting_tasks() == {"_request_registered_call": 2, "_request_call": 1}
        target = f"127.0.0.1:{lab.port}"
        async with grpc.aio.insecure_channel(target, options=channel_options()) as channel:
            got = await cache_pb2_grpc.CacheStub(channel).Get(
                cache_pb2.CacheGetRequest(key="k"), timeout=10
            )
            assert got == REPLY
            noted = await chaos_pb2_grpc.ChaosLogStub(channel).NoteAction(
                chaos_pb2.ChaosAction(verb="kill", target="db"), timeout=10
            )
            assert noted.count == 1
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="herdlab.v1.Cache"), timeout=10
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            listed: set[str] = set()
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            async for response in stub.ServerReflectionInfo(iter([request]), timeout=10):
                listed |= {s.name for s in response.list_services_response.service}
            assert {"herdlab.v1.Cache", "herdlab.v1.ChaosLog", "grpc.health.v1.Health"} <= listed
    finally:
        await lab.server.stop(None)


def _server_calls() -> dict[str, float]:
    """What `ServerCalls` exports now, by sample (stage counters and the waiting gauge)."""
    found = {}
    for metric in ServerCalls(CollectorRegistry()).collect():
        for sample in metric.samples:
            found[sample.labels.get("stage", sample.name)] = sample.value
    return found


def test_calls_that_wait_unseen_in_grpc_core_are_counted() -> None:
    """A handler that blocks its event loop keeps the service from taking up more calls: they
    wait in gRPC core, where no other metric of the service sees them (core once cancelled such
    calls after 30 s with a CANCELLED no client asked for)."""
    entered, release = threading.Event(), threading.Event()

    class Blocking(ConstantCache):
        def Get(
            self, request: cache_pb2.CacheGetRequest, context: Context
        ) -> cache_pb2.CacheGetResponse:
            entered.set()
            release.wait(30)  # blocks the server's event loop: nothing else is taken up
            return REPLY

    bound: list[int] = []
    listening, stopped = threading.Event(), threading.Event()

    async def serve() -> None:
        service = Service(Blocking(), cache_pb2.DESCRIPTOR.services_by_name["Cache"], True)
        lab = build_server([service], host="127.0.0.1", port=0)
        await lab.start()
        bound.append(lab.port)
        listening.set()
        await asyncio.get_running_loop().run_in_executor(None, stopped.wait)
        await lab.server.stop(None)

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert listening.wait(30)
        before = _server_calls()
        with grpc.insecure_channel(f"127.0.0.1:{bound[0]}", options=channel_options()) as channel:
            get = cache_pb2_grpc.CacheStub(channel).Get
            first = get.future(cache_pb2.CacheGetRequest(key="k"), timeout=30)
            assert entered.wait(30)
            more = [get.future(cache_pb2.CacheGetRequest(key="k"), timeout=30) for _ in range(5)]
            for _ in range(3000):  # bounded: until core has seen all six
                if _server_calls()["started"] - before["started"] >= 6:
                    break
                time.sleep(0.01)
            assert _server_calls()["herdlab_grpc_server_calls_waiting"] == 5
            release.set()
            assert [f.result(30) for f in [first, *more]] == [REPLY] * 6
        assert _server_calls()["herdlab_grpc_server_calls_waiting"] == 0
    finally:
        release.set()
        stopped.set()
        thread.join(30)


async def test_max_age_ends_each_connection_near_its_age_drawn_by_grpc_core() -> None:
    """`MaxAge` reaches gRPC core: each connection is sent GOAWAY (its channel leaves READY)
    within +-10% of the age, drawn per connection by core itself (gRFC A9), then closed."""
    data = Service(ConstantCache(), cache_pb2.DESCRIPTOR.services_by_name["Cache"], registered=True)
    lab = build_server([data], host="127.0.0.1", port=0, max_age=MaxAge(age_ms=500, grace_ms=100))
    await lab.start()
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{lab.port}", options=channel_options(local_pool=True))
        for _ in range(8)
    ]
    try:
        loop = asyncio.get_running_loop()

        async def lifetime(channel: grpc.aio.Channel) -> float:
            started = loop.time()
            await cache_pb2_grpc.CacheStub(channel).Get(cache_pb2.CacheGetRequest(key="k"))
            async with asyncio.timeout(5):
                await channel.wait_for_state_change(grpc.ChannelConnectivity.READY)
            return loop.time() - started

        lifetimes = await asyncio.gather(*(lifetime(c) for c in channels))
        assert all(0.45 <= t < 2.0 for t in lifetimes), lifetimes
    finally:
        for channel in channels:
            await channel.close(None)
        await lab.server.stop(None)
